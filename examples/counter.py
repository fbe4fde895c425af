"""The reference example: the Go library's counter tasks, on funtask-trio.

Serve it with any of:

    make run                                            # token and dead-letter dir made for you
    funtask-trio serve examples.counter:server          # the same, by hand
    hypercorn --worker-class trio examples.counter:server
    python examples/counter.py                          # server.run()

The last two need FUNTASK_AUTH_TOKEN and FUNTASK_DEAD_LETTER_DIR in the environment.
"""

import trio

import funtask_trio as ft

server = ft.Server(
    "counter",
    dashboard=True,
    # Async callbacks may go to a receiver on this machine (see the README's curl example).
    callback_allowlist=["http://127.0.0.1:9000", "http://localhost:9000"],
)


@server.task(description="Returns a greeting", example={"name": "World"})
async def greet(run: ft.Run, params: ft.Params) -> ft.Result:
    name = params.str("name", default="World")
    return ft.ok(f"Hello, {name}!").with_data(name=name)


@server.task("fail-demo", description="Always fails, to show an error", example={})
async def fail_demo(run: ft.Run, params: ft.Params) -> ft.Result:
    await run.step("connecting to the database")
    return ft.fail("db_error", "connection refused to db.example.com")


@server.task(description="Counts down from start to 1", example={"start": 5})
async def countdown(run: ft.Run, params: ft.Params) -> ft.Result:
    start = params.int("start")
    interval = params.float("interval", default=1.0)
    for i in range(start):
        await run.progress(i + 1, start, "T-%d", start - i)
        await trio.sleep(interval)  # /stop cancels here
    return ft.ok("Countdown complete.").with_data(start=start)


if __name__ == "__main__":
    server.run(port=8080)
