"""funtask_trio.client against a real server (and a few fakes for what a server won't do)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import httpx
import pytest
import trio

import funtask_trio as ft
from funtask_trio.client import (
    ClientError,
    FuntaskClient,
    InvalidRequest,
    JobResult,
    JobRunning,
    ResultNotFound,
    ServerDraining,
    ServerError,
    SSEDecoder,
    SyncFuntaskClient,
    SyncTimeout,
    TaskBusy,
    TaskNotFound,
    Unauthorized,
    parse_duration,
)
from funtask_trio.testing import RunningServer, open_callback_receiver, running_server


def build_server(make_server: Callable[..., ft.Server], **options: Any) -> ft.Server:
    server = make_server(**options)

    @server.task
    async def greet(run: ft.Run, params: ft.Params) -> ft.Result:
        return ft.ok(f"Hello, {params.str('name', default='World')}!").with_data(
            name=params.str("name", default="World")
        )

    @server.task("fail-demo")
    async def fail_demo(run: ft.Run, params: ft.Params) -> ft.Result:
        await run.step("connecting")
        return ft.fail("db_error", "connection refused")

    @server.task
    async def wait(run: ft.Run, params: ft.Params) -> ft.Result:
        await run.step("waiting")
        await trio.sleep_forever()
        raise AssertionError

    return server


@pytest.fixture
async def running(make_server: Callable[..., ft.Server]) -> AsyncIterator[RunningServer]:
    async with running_server(build_server(make_server, max_body_size=2000)) as served:
        yield served


@pytest.fixture
async def client(running: RunningServer) -> AsyncIterator[FuntaskClient]:
    async with FuntaskClient(running.url, running.token, timeout=5) as typed:
        yield typed


async def wait_until_running(client: FuntaskClient, task: str) -> dict[str, Any]:
    with trio.fail_after(5):
        while True:
            job = (await client.health())["tasks"][task].get("currentJob")
            if job and job.get("currentStep"):
                return dict(job)
            await trio.sleep(0.01)


# -- run / result --------------------------------------------------------------------


async def test_run_returns_a_typed_result(client: FuntaskClient) -> None:
    result = await client.run("greet", {"name": "Trio"}, job_id="g-1")
    assert isinstance(result, JobResult)
    assert (result.job_id, result.success, result.message) == ("g-1", True, "Hello, Trio!")
    assert result.data == {"name": "Trio"}
    assert result.error_code == result.error_message == result.step == ""
    assert result.duration.endswith("s") and 0 <= result.duration_s < 5
    assert result.raw["message"] == "Hello, Trio!"


async def test_failed_job_is_a_result_not_an_exception(client: FuntaskClient) -> None:
    result = await client.run("fail-demo")
    assert not result.success
    assert (result.error_code, result.error_message, result.step) == (
        "db_error",
        "connection refused",
        "connecting",
    )
    assert result.message == ""


async def test_run_with_a_finished_job_id_replays_the_stored_result(client: FuntaskClient) -> None:
    first = await client.run("greet", {"name": "A"}, "same")
    again = await client.run("greet", {"name": "B"}, "same")
    assert again == first
    assert await client.result("same") == first


async def test_running_job_busy_task_and_stop(client: FuntaskClient) -> None:
    async with trio.open_nursery() as nursery:
        outcome: list[JobResult | JobRunning] = []

        async def run_in_background() -> None:
            outcome.append(await client.run("wait", None, "w-1"))

        nursery.start_soon(run_in_background)
        await wait_until_running(client, "wait")

        running = await client.run("wait", job_id="w-1")
        assert isinstance(running, JobRunning)
        assert (running.job_id, running.current_step) == ("w-1", "waiting")
        assert running.running_s >= 0

        with pytest.raises(TaskBusy) as busy:
            await client.run("wait", job_id="w-2")
        assert busy.value.status == 409
        assert busy.value.error == "Task is busy with a different job"
        assert busy.value.current_job["jobId"] == "w-1"

        stopped = await client.stop("wait")
        assert stopped.requested and (stopped.task, stopped.job_id) == ("wait", "w-1")
        assert stopped.message == "Cancellation requested"
    [result] = outcome
    assert isinstance(result, JobResult)
    assert (result.error_code, result.error_message) == ("cancelled", "stopped by request")

    idle = await client.stop("wait")
    assert not idle.requested and idle.job_id is None and idle.message == "No running job"


async def test_result_not_found(client: FuntaskClient) -> None:
    with pytest.raises(ResultNotFound) as error:
        await client.result("never-ran")
    assert (error.value.status, error.value.error) == (404, "result not found")


async def test_unknown_task(client: FuntaskClient) -> None:
    with pytest.raises(TaskNotFound) as error:
        await client.run("nope")
    assert (error.value.status, error.value.error) == (404, 'task "nope" not found')
    with pytest.raises(TaskNotFound):
        await client.stop("nope")
    with pytest.raises(TaskNotFound):
        await client.start("nope", {}, "http://127.0.0.1:1/x")


async def test_wrong_token_is_unauthorized(running: RunningServer) -> None:
    async with FuntaskClient(running.url, "wrong") as client:
        for call in (client.run("greet"), client.health(), client.result("x")):
            with pytest.raises(Unauthorized) as error:
                await call
            assert (error.value.status, error.value.error) == (401, "unauthorized")


async def test_token_defaults_to_the_environment(
    running: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUNTASK_AUTH_TOKEN", running.token)
    async with FuntaskClient(running.url) as client:
        assert (await client.health())["name"] == "test-server"


async def test_invalid_requests(client: FuntaskClient) -> None:
    with pytest.raises(InvalidRequest) as no_allowlist:
        await client.start("greet", {}, "http://127.0.0.1:9/hook")
    assert no_allowlist.value.status == 400
    assert no_allowlist.value.error == "callback URLs not allowed (no allowlist configured)"

    with pytest.raises(InvalidRequest) as too_large:
        await client.run("greet", {"name": "x" * 5000})
    assert (too_large.value.status, too_large.value.error) == (413, "request body too large")


async def test_params_json_cannot_carry_are_refused_before_sending(client: FuntaskClient) -> None:
    with pytest.raises(ValueError):
        await client.run("greet", {"n": float("nan")})
    with pytest.raises(TypeError):
        await client.run("greet", {"s": {1, 2}})


async def test_sync_timeout(make_server: Callable[..., ft.Server]) -> None:
    server = build_server(make_server, sync_timeout=0.2)
    async with running_server(server) as served, served.funtask_client() as client:
        with pytest.raises(SyncTimeout) as error:
            await client.run("wait")
    assert error.value.status == 504
    assert error.value.error.startswith("Sync mode timeout exceeded (200ms).")


async def test_draining_server(make_server: Callable[..., ft.Server]) -> None:
    release = trio.Event()
    server = build_server(make_server, shutdown_timeout=5)

    @server.task
    async def stubborn(run: ft.Run, params: ft.Params) -> ft.Result:
        await run.step("ignoring cancellation")
        with trio.CancelScope(shield=True):
            await release.wait()
        return ft.ok()

    async with running_server(server) as served, served.funtask_client() as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run, "stubborn")
            await wait_until_running(client, "stubborn")
            served.request_shutdown()
            with pytest.raises(ServerDraining) as error:
                await client.run("greet")
            assert (error.value.status, error.value.error) == (503, "Server is shutting down")
            assert (await client.health())["status"] == "draining"
            release.set()


async def test_unreachable_server_is_a_server_error_with_status_0() -> None:
    async with FuntaskClient("http://127.0.0.1:1", "t", timeout=2) as client:
        with pytest.raises(ServerError) as error:
            await client.health()
    assert error.value.status == 0
    assert "cannot reach http://127.0.0.1:1" in error.value.error
    assert isinstance(error.value, ClientError)


async def test_other_statuses_and_non_json_answers_are_server_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(502, text="<html>bad gateway</html>")
        if request.url.path == "/result/x":
            return httpx.Response(200, text="not json")
        return httpx.Response(500, json={"error": "internal server error"})

    async with FuntaskClient(
        "http://funtask.test", "t", transport=httpx.MockTransport(handler)
    ) as client:
        with pytest.raises(ServerError) as gateway:
            await client.health()
        assert (gateway.value.status, gateway.value.error) == (502, "<html>bad gateway</html>")
        with pytest.raises(ServerError) as internal:
            await client.run("greet")
        assert (internal.value.status, internal.value.error) == (500, "internal server error")
        with pytest.raises(ServerError, match="not a JSON object"):
            await client.result("x")


async def test_requests_carry_token_json_and_quoted_names() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"jobId": "j", "success": True, "duration": "1ms"})

    async with FuntaskClient(
        "http://funtask.test", "secret", transport=httpx.MockTransport(handler)
    ) as client:
        await client.run("a/b c", {"k": [1]}, job_id="j")
    [request] = seen
    assert request.url.raw_path == b"/run/a%2Fb%20c"
    assert request.headers["authorization"] == "Bearer secret"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"jobId": "j", "params": {"k": [1]}}


# -- start (async mode) ------------------------------------------------------------


async def wait_for_result(client: FuntaskClient, job_id: str) -> JobResult:
    """A delivered job's result is stored (and its task freed) once delivery has ended."""
    with trio.fail_after(5):
        while True:
            try:
                return await client.result(job_id)
            except ResultNotFound:
                await trio.sleep(0.01)


async def test_start_delivers_to_the_callback(make_server: Callable[..., ft.Server]) -> None:
    async with open_callback_receiver() as receiver:
        server = build_server(make_server, callback_allowlist=[receiver.origin])
        async with running_server(server) as served, served.funtask_client() as client:
            job_id = await client.start("greet", {"name": "CB"}, receiver.url)
            assert job_id
            delivered = await receiver.wait_for(job_id)
            assert JobResult.from_json(delivered.json).message == "Hello, CB!"
            assert (await wait_for_result(client, job_id)).raw == delivered.json

            assert await client.start("greet", {}, receiver.url, job_id="mine") == "mine"
            await receiver.wait_for("mine")
            assert (await wait_for_result(client, "mine")).message == "Hello, World!"
            # Idempotent: the finished job is not started again.
            assert await client.start("greet", {}, receiver.url, job_id="mine") == "mine"
    assert len(receiver.callbacks_for("mine")) == 1


# -- health and events ---------------------------------------------------------------


async def test_health(client: FuntaskClient) -> None:
    health = await client.health()
    assert health["name"] == "test-server" and health["status"] == "ok"
    assert set(health["tasks"]) == {"greet", "fail-demo", "wait"}


async def test_events_stream_snapshots_as_jobs_change(client: FuntaskClient) -> None:
    async with client.events() as events:
        first = await events.__anext__()
        assert first["name"] == "test-server"
        assert "lastJob" not in first["tasks"]["greet"]
        await client.run("greet", job_id="ev-1")
        with trio.fail_after(5):
            async for snapshot in events:
                if snapshot["tasks"]["greet"].get("lastJob", {}).get("jobId") == "ev-1":
                    break


async def test_events_unauthorized_raises_at_once(running: RunningServer) -> None:
    async with FuntaskClient(running.url, "wrong") as client:
        with pytest.raises(Unauthorized):
            async with client.events(retry_delay=0) as events:
                await events.__anext__()


async def test_events_give_up_after_max_retries() -> None:
    async with FuntaskClient("http://127.0.0.1:1", "t") as client:
        with pytest.raises(ServerError) as error:
            async for _ in client.events(retry_delay=0.001, max_retries=2):
                pass
    assert error.value.status == 0


async def test_events_reconnect_after_a_dropped_connection() -> None:
    """A fake SSE server: each connection sends a keepalive, one frame, then drops."""
    connections = 0

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        number = connections
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(4096)
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        frame = b': keepalive\n\ndata: {"n":%d}\r\n\r\n' % number
        await stream.send_all(b"%x\r\n%s\r\n" % (len(frame), frame))
        await stream.aclose()  # mid-body: a dropped connection

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with FuntaskClient(f"http://127.0.0.1:{port}", "t") as client:
            seen = []
            async with client.events(retry_delay=0.001, max_retries=1) as events:
                async for snapshot in events:
                    seen.append(snapshot["n"])
                    if len(seen) == 3:
                        break
        nursery.cancel_scope.cancel()
    assert seen == [1, 2, 3]


def test_sse_decoder_handles_split_chunks_comments_and_multiline_data() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b": keepalive\n\nda") == []
    assert decoder.feed(b'ta: {"a":\r') == []
    assert decoder.feed(b"\ndata: 1}\r\n\r\nretry: 250\nid: x\n\n") == ['{"a":\n1}']
    assert decoder.retry_ms == 250
    assert decoder.feed(b"data:no-space\n\n") == ["no-space"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0),
        ("15ms", 0.015),
        ("1.234s", 1.234),
        ("1m2.5s", 62.5),
        ("1h0m0s", 3600),
        ("3\u00b5s", 3e-6),
        ("-2s", -2),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "1x", "s", "1s2"])
def test_parse_duration_refuses_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# -- the blocking client ---------------------------------------------------------------


async def test_sync_client_same_answers_and_errors(running: RunningServer) -> None:
    def script() -> None:
        with SyncFuntaskClient(running.url, running.token, timeout=5) as client:
            result = client.run("greet", {"name": "Sync"}, job_id="s-1")
            assert isinstance(result, JobResult) and result.message == "Hello, Sync!"
            assert client.result("s-1") == result
            assert not client.run("fail-demo").success
            assert not client.stop("greet").requested
            assert client.health()["name"] == "test-server"
            events = client.events()
            assert next(events)["status"] == "ok"
            events.close()
            with pytest.raises(TaskNotFound):
                client.run("nope")
            with pytest.raises(ResultNotFound):
                client.result("nope")
            with pytest.raises(InvalidRequest):
                client.start("greet", {}, "http://127.0.0.1:9/x")
        with SyncFuntaskClient(running.url, "wrong") as client, pytest.raises(Unauthorized):
            client.health()
        with SyncFuntaskClient("http://127.0.0.1:1", "t") as client:
            with pytest.raises(ServerError) as error:
                client.health()
            assert error.value.status == 0

    await trio.to_thread.run_sync(script)


async def test_async_client_also_runs_under_asyncio(running: RunningServer) -> None:
    async def orchestrate() -> tuple[str, int]:
        async with FuntaskClient(running.url, running.token, timeout=5) as client:
            result = await client.run("greet", {"name": "asyncio"})
            async with client.events() as events:
                snapshot = await events.__anext__()
            return result.message, len(snapshot["tasks"])

    outcome = await trio.to_thread.run_sync(asyncio.run, orchestrate())
    assert outcome == ("Hello, asyncio!", 3)
