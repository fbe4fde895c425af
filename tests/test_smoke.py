import funtask_trio as ft
from funtask_trio.testing import running_server


async def test_greet_over_real_http(make_server):
    server = make_server()

    @server.task
    async def greet(run: ft.Run, params: ft.Params) -> ft.Result:
        return ft.ok(f"Hello, {params.str('name', default='World')}!")

    async with running_server(server) as running, running.client() as client:
        response = await client.post("/run/greet", json={"params": {"name": "Trio"}})
    assert response.status_code == 200
    assert response.json()["message"] == "Hello, Trio!"
