"""The pytest plugin, exercised the way a user's project uses it (pytester, in a subprocess)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SAMPLE_SERVER = """
import trio
import funtask_trio as ft

# No token, no dead-letter directory, an allowlist without the receiver: the
# plugin fills in what a test needs.
server = ft.Server("sample", callback_allowlist=["http://hooks.example.com"])


@server.task
async def greet(run: ft.Run, params: ft.Params) -> ft.Result:
    return ft.ok(f"Hello, {params.str('name', default='World')}!")


@server.task
async def wait(run: ft.Run, params: ft.Params) -> ft.Result:
    await run.step("waiting")
    await trio.sleep_forever()

not_a_server = object()
"""

SAMPLE_TESTS = """
import pytest
import trio

import sample_server

pytestmark = pytest.mark.funtask_server("sample_server:server")


async def test_run_through_the_client(funtask_client):
    response = await funtask_client.post("/run/greet", json={"params": {"name": "Plugin"}})
    assert response.status_code == 200
    assert response.json()["message"] == "Hello, Plugin!"


async def test_token_and_temporary_dead_letter_dir_were_supplied(
    funtask_client, funtask_running_server, tmp_path_factory
):
    server = funtask_running_server.server
    assert server is sample_server.server
    assert server.auth_token and funtask_client.headers["authorization"] == (
        "Bearer " + server.auth_token
    )
    assert server.dead_letter_dir.is_dir()
    assert str(server.dead_letter_dir).startswith(str(tmp_path_factory.getbasetemp()))
    unauthenticated = await funtask_client.get("/health", headers={"Authorization": ""})
    assert unauthenticated.status_code == 401


def test_server_configuration_is_restored_after_each_test():
    server = sample_server.server
    assert server.auth_token is None and server.dead_letter_dir is None
    assert server.callback_allowlist == ["http://hooks.example.com"]


async def test_callback_delivered_after_planned_failures(funtask_client, callback_receiver):
    callback_receiver.fail_next(2, status=503, retry_after=0)
    response = await funtask_client.post(
        "/run/greet",
        json={"jobId": "cb", "callbackUrl": callback_receiver.url, "params": {"name": "CB"}},
    )
    assert response.status_code == 202
    delivered = await callback_receiver.wait_for("cb")
    assert delivered.json["message"] == "Hello, CB!"
    assert delivered.headers["content-type"] == "application/json"
    assert [c.status for c in callback_receiver.callbacks_for("cb")] == [503, 503, 200]


async def test_typed_client_from_the_running_server(funtask_running_server):
    async with funtask_running_server.funtask_client() as client:
        assert (await client.run("greet")).message == "Hello, World!"


async def test_running_job_is_cancelled_when_the_test_ends(funtask_client, callback_receiver):
    response = await funtask_client.post(
        "/run/wait", json={"jobId": "w", "callbackUrl": callback_receiver.url}
    )
    assert response.status_code == 202


@pytest.mark.funtask_server(sample_server.server)
async def test_marker_accepts_a_server_object(funtask_client):
    assert (await funtask_client.get("/health")).json()["name"] == "sample"


async def test_receiver_alone(callback_receiver):
    assert callback_receiver.url.startswith("http://127.0.0.1:")
    assert callback_receiver.received == []
"""

FAILING_TESTS = """
import pytest


async def test_no_server_configured(funtask_client):
    pass


@pytest.mark.funtask_server("no_such_module:server")
async def test_unknown_module(funtask_client):
    pass


@pytest.mark.funtask_server("sample_server:not_a_server")
async def test_not_a_server(funtask_client):
    pass


@pytest.mark.funtask_server(42)
async def test_marker_of_the_wrong_type(funtask_client):
    pass
"""

OVERRIDE_CONFTEST = """
import pytest
import funtask_trio as ft


@pytest.fixture
def funtask_server(tmp_path):
    server = ft.Server("overridden", auth_token="chosen", dead_letter_dir=tmp_path / "dl")

    @server.task
    async def echo(run, params):
        return ft.ok().with_data(params.raw)

    return server
"""

OVERRIDE_TESTS = """
async def test_overridden_server_keeps_its_token(funtask_client):
    assert funtask_client.headers["authorization"] == "Bearer chosen"
    response = await funtask_client.post("/run/echo", json={"params": {"a": 1}})
    assert response.json()["data"] == {"a": 1}
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("FUNTASK_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("FUNTASK_DEAD_LETTER_DIR", raising=False)
    pytester.makefile(".py", sample_server=SAMPLE_SERVER)
    return pytester


@pytest.mark.slow
def test_fixtures_in_a_trio_mode_project(project: pytest.Pytester) -> None:
    project.makeini(
        """
        [pytest]
        trio_mode = true
        pythonpath = .
        addopts = --strict-markers -p no:cacheprovider
        filterwarnings =
            error
            ignore:Async generator 'httpx._models.Response.aiter_:ResourceWarning
        """
    )
    project.makepyfile(test_sample=SAMPLE_TESTS, test_failing=FAILING_TESTS)
    overridden = project.mkpydir("overridden")
    (overridden / "conftest.py").write_text(OVERRIDE_CONFTEST)
    (overridden / "test_override.py").write_text(OVERRIDE_TESTS)

    result = project.runpytest_subprocess("-rA")

    result.assert_outcomes(passed=9, errors=4)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_no_server_configured*",
            "funtask_client needs a server: mark the test with"
            " @pytest.mark.funtask_server('module:attribute') or override the funtask_server"
            " fixture in conftest.py",
            "*ERROR at setup of test_unknown_module*",
            "@pytest.mark.funtask_server('no_such_module:server'): cannot import module"
            " 'no_such_module'*",
            "*ERROR at setup of test_not_a_server*",
            "*sample_server:not_a_server is not a funtask_trio.Server (got object)",
            "*ERROR at setup of test_marker_of_the_wrong_type*",
            "@pytest.mark.funtask_server takes 'module:attribute' or a funtask_trio.Server,"
            " not int",
        ]
    )
    assert "Traceback" not in result.stdout.str()


@pytest.mark.slow
def test_fixtures_with_trio_markers_and_no_trio_mode(project: pytest.Pytester) -> None:
    project.makeini(
        """
        [pytest]
        pythonpath = .
        addopts = --strict-markers -p no:cacheprovider
        """
    )
    # --strict-markers: the plugin registers its marker itself.
    project.makepyfile(
        test_marked="""
        import pytest

        @pytest.mark.trio
        @pytest.mark.funtask_server("sample_server:server")
        async def test_marked(funtask_client, callback_receiver):
            assert (await funtask_client.post("/run/greet")).status_code == 200
        """
    )
    result = project.runpytest_subprocess()
    result.assert_outcomes(passed=1)
