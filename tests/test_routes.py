"""The HTTP contract (PROTOCOL.md) over real HTTP: hypercorn on a loopback port, httpx."""

from __future__ import annotations

import json
import logging
import re
import uuid
from functools import partial

import httpx
import pytest
import trio
import trio.lowlevel

import funtask_trio as ft
from funtask_trio.testing import running_server

TOKEN = "test-token"  # as in conftest.make_server

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def add_tasks(server: ft.Server) -> dict[str, trio.Event]:
    """Register the tasks these tests use; returns events the tasks report through."""
    events = {
        "slow_started": trio.Event(),
        "slow_cleaned_up": trio.Event(),
        "release": trio.Event(),
    }

    @server.task
    async def lingering(run: ft.Run, params: ft.Params) -> ft.Result:
        """Ignores cancellation until events["release"] is set."""
        await run.step("holding on")
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await events["release"].wait()
        return ft.ok()

    @server.task(description="Returns a greeting", example={"name": "World"})
    async def greet(run: ft.Run, params: ft.Params) -> ft.Result:
        name = params.str("name", default="World")
        return ft.ok(f"Hello, {name}!").with_data(name=name)

    @server.task
    async def slow(run: ft.Run, params: ft.Params) -> ft.Result:
        await run.step("waiting")
        events["slow_started"].set()
        try:
            await trio.sleep(params.float("seconds", default=60))
        finally:
            events["slow_cleaned_up"].set()
        return ft.ok("slept")

    @server.task
    async def boom(run: ft.Run, params: ft.Params) -> ft.Result:
        await run.step("about to explode")
        raise RuntimeError("kaboom")

    @server.task
    async def typed(run: ft.Run, params: ft.Params) -> ft.Result:
        return ft.ok(str(params.int("count")))

    @server.task("task-error")
    async def task_error(run: ft.Run, params: ft.Params) -> ft.Result:
        raise ft.TaskError("quota_exceeded", "try again tomorrow")

    @server.task
    async def garbage(run: ft.Run, params: ft.Params) -> ft.Result:
        return 42  # type: ignore[return-value]

    @server.task
    async def unserializable(run: ft.Run, params: ft.Params) -> ft.Result:
        return ft.ok().with_data(value={1, 2})

    @server.task
    async def huge(run: ft.Run, params: ft.Params) -> ft.Result:
        return ft.ok().with_data(blob="x" * (10 * 1024 * 1024))

    @server.task
    async def children(run: ft.Run, params: ft.Params) -> ft.Result:
        async def child() -> None:
            try:
                await trio.sleep_forever()
            finally:
                events["slow_cleaned_up"].set()

        run.nursery.start_soon(child)
        if params.bool("fail", default=False):
            run.nursery.start_soon(_raise_in_child)
        events["slow_started"].set()
        await trio.sleep_forever()
        return ft.ok()

    return events


async def _raise_in_child() -> None:
    await trio.lowlevel.checkpoint()
    raise KeyError("child failed")


async def until_running(client: httpx.AsyncClient, task: str) -> None:
    """Wait until `task` is running a job."""
    with trio.fail_after(5):
        while (await client.get("/health")).json()["tasks"][task].get("currentJob") is None:
            await trio.sleep(0.01)


@pytest.fixture
async def served(make_server):
    """A started server with the test tasks, plus an authenticated client."""
    server = make_server(result_history=3, max_body_size=4096, sync_timeout=30)
    events = add_tasks(server)
    async with running_server(server) as running, running.client() as client:
        client.events = events  # type: ignore[attr-defined]
        yield client


# -- auth, 404, 405 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/run/greet"),
        ("POST", "/stop/greet"),
        ("GET", "/result/x"),
        ("GET", "/health"),
        ("GET", "/events"),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}],
)
async def test_protected_routes_answer_401_without_the_right_token(served, method, path, headers):
    async with httpx.AsyncClient(base_url=str(served.base_url)) as anonymous:
        response = await anonymous.request(method, path, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized"}


async def test_token_query_parameter_is_accepted_on_events_only(served):
    async with httpx.AsyncClient(base_url=str(served.base_url)) as anonymous:
        health = await anonymous.get("/health", params={"token": TOKEN})
        assert health.status_code == 401
        async with anonymous.stream("GET", "/events", params={"token": TOKEN}) as stream:
            assert stream.status_code == 200
        wrong = await anonymous.get("/events", params={"token": "nope"})
        assert wrong.status_code == 401


async def test_probes_need_no_auth(served):
    async with httpx.AsyncClient(base_url=str(served.base_url)) as anonymous:
        assert (await anonymous.get("/livez")).json() == {"status": "ok"}
        readyz = await anonymous.get("/readyz")
        assert (readyz.status_code, readyz.json()) == (200, {"status": "ok"})


async def test_unknown_path_is_404_and_wrong_method_is_405(served):
    missing = await served.get("/nope")
    assert missing.status_code == 404 and "error" in missing.json()
    for method, path in [("GET", "/run/greet"), ("GET", "/stop/greet"), ("POST", "/health")]:
        response = await served.request(method, path)
        assert response.status_code == 405, (method, path)
        assert "error" in response.json()


# -- /run ---------------------------------------------------------------------------


async def test_sync_run_answers_200_with_the_result(served):
    response = await served.post("/run/greet", json={"params": {"name": "Trio"}})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["success"] is True
    assert body["message"] == "Hello, Trio!"
    assert body["data"] == {"name": "Trio"}
    assert re.fullmatch(r"\d+(\.\d+)?(ms|s)|0s", body["duration"])
    assert uuid.UUID(body["jobId"]).version == 4
    assert "error" not in body


async def test_empty_and_form_encoded_bodies_are_json(served):
    empty = await served.post("/run/greet")
    assert empty.status_code == 200 and empty.json()["message"] == "Hello, World!"
    form = await served.post(
        "/run/greet",
        content=b'{"params":{"name":"curl"}}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.json()["message"] == "Hello, curl!"
    nulls = await served.post("/run/greet", json={"jobId": None, "params": None})
    assert nulls.status_code == 200


async def test_unknown_task_is_404_with_the_name_quoted(served):
    response = await served.post("/run/nope", json={})
    assert response.status_code == 404
    assert response.json() == {"error": 'task "nope" not found'}


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'"text"',
        b'{"params": [1]}',
        b'{"params": "x"}',
        b'{"jobId": 5}',
        b'{"jobId": ["a"]}',
        b'{"callbackUrl": 1}',
        b'{"params": {"x": NaN}}',
        b'{"params": {"x": 1e999}}',
        b"\xff\xfe{}",
        b"[" * 2000 + b"]" * 2000,
    ],
)
async def test_malformed_bodies_answer_400_invalid_request_body(served, body):
    response = await served.post("/run/greet", content=body)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid request body"}


async def test_body_over_max_body_size_answers_413(served):
    response = await served.post("/run/greet", json={"params": {"x": "y" * 5000}})
    assert response.status_code == 413
    assert response.json() == {"error": "request body too large"}


async def test_callback_urls_need_an_allowlist(served):
    response = await served.post("/run/greet", json={"callbackUrl": "http://127.0.0.1:1/x"})
    assert response.status_code == 400
    assert response.json() == {"error": "callback URLs not allowed (no allowlist configured)"}


async def test_callback_url_outside_the_allowlist_and_unsafe_job_ids_are_refused(make_server):
    server = make_server(callback_allowlist=["http://127.0.0.1:9"])
    add_tasks(server)
    async with running_server(server) as running, running.client() as client:
        refused = await client.post("/run/greet", json={"callbackUrl": "http://evil.test/x"})
        assert (refused.status_code, refused.json()) == (400, {"error": "callback URL not allowed"})
        for job_id in ["../x", "a/b", "/abs", "..", ".", "a\\b", "nul\x00"]:
            response = await client.post(
                "/run/greet", json={"jobId": job_id, "callbackUrl": "http://127.0.0.1:9/cb"}
            )
            assert (response.status_code, response.json()) == (400, {"error": "invalid jobId"})
        # Without a callback the jobId names no file, so any string is fine.
        sync = await client.post("/run/greet", json={"jobId": "a/b"})
        assert sync.json()["jobId"] == "a/b"


async def test_stored_job_id_replays_the_stored_result_without_running_again(served):
    first = await served.post("/run/greet", json={"jobId": "same", "params": {"name": "A"}})
    again = await served.post("/run/greet", json={"jobId": "same", "params": {"name": "B"}})
    assert again.status_code == 200
    assert again.content == first.content
    assert again.json()["message"] == "Hello, A!"


async def test_same_job_id_while_running_answers_running_and_other_ids_409(served):
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(served.post, "/run/slow", json={"jobId": "long"}))
        await served.events["slow_started"].wait()
        same = await served.post("/run/slow", json={"jobId": "long"})
        assert same.status_code == 200
        body = same.json()
        assert body == {
            "jobId": "long",
            "status": "running",
            "running": body["running"],
            "currentStep": "waiting",
        }
        assert re.fullmatch(r"\d+s", body["running"])
        busy = await served.post("/run/slow", json={"jobId": "other"})
        assert busy.status_code == 409
        assert busy.json() == {
            "error": "Task is busy with a different job",
            "task": "slow",
            "currentJob": {"jobId": "long", "running": busy.json()["currentJob"]["running"]},
        }
        stop = await served.post("/stop/slow")
        assert stop.json() == {
            "task": "slow",
            "jobId": "long",
            "message": "Cancellation requested",
        }
    result = await served.get("/result/long")
    assert result.json()["error"] == {
        "code": "cancelled",
        "message": "stopped by request",
        "step": "waiting",
    }
    assert served.events["slow_cleaned_up"].is_set()


async def test_stop_on_unknown_and_idle_tasks(served):
    unknown = await served.post("/stop/nope")
    assert (unknown.status_code, unknown.json()) == (404, {"error": 'task "nope" not found'})
    idle = await served.post("/stop/greet")
    assert idle.json() == {"task": "greet", "message": "No running job"}


async def test_error_outcomes_map_to_protocol_codes(served, caplog):
    caplog.set_level(logging.ERROR, logger="funtask_trio")
    boom = (await served.post("/run/boom")).json()
    assert boom["error"] == {"code": "panic", "message": "kaboom", "step": "about to explode"}
    assert "Traceback" not in str(boom)
    assert any(record.exc_info for record in caplog.records), "the traceback goes to the log"
    typed = (await served.post("/run/typed", json={"params": {"count": "x"}})).json()
    assert typed["error"] == {
        "code": "invalid_params",
        "message": "missing or invalid parameters: count (expected int)",
    }
    task_error = (await served.post("/run/task-error")).json()
    assert task_error["error"] == {"code": "quota_exceeded", "message": "try again tomorrow"}
    garbage = (await served.post("/run/garbage")).json()
    assert garbage["error"]["code"] == "panic"
    unserializable = (await served.post("/run/unserializable")).json()
    assert unserializable["error"] == {
        "code": "result_serialization_failed",
        "message": "result could not be serialized",
    }
    huge = await served.post("/run/huge")
    assert huge.json()["error"] == {
        "code": "result_too_large",
        "message": "result exceeds maximum size (10 MB)",
    }


async def test_a_child_task_failing_fails_the_job_and_cancels_its_siblings(served):
    response = await served.post("/run/children", json={"params": {"fail": True}})
    assert response.json()["error"]["code"] == "panic"
    assert "child failed" in response.json()["error"]["message"]
    assert served.events["slow_cleaned_up"].is_set()
    # The slot is free and the server keeps working.
    assert (await served.post("/run/greet")).status_code == 200


async def test_history_keeps_the_last_n_results_and_evicts_older_ones(served):
    ids = [f"job-{index}" for index in range(5)]
    for job_id in ids:
        await served.post("/run/greet", json={"jobId": job_id})
    assert (await served.get("/result/job-0")).status_code == 404
    assert (await served.get("/result/job-1")).json() == {"error": "result not found"}
    assert (await served.get("/result/job-4")).json()["jobId"] == "job-4"
    results = (await served.get("/health")).json()["tasks"]["greet"]["results"]
    assert [entry["jobId"] for entry in results] == ["job-4", "job-3", "job-2"]
    # An evicted jobId runs again.
    rerun = await served.post("/run/greet", json={"jobId": "job-0"})
    assert rerun.json()["jobId"] == "job-0"


async def test_keep_results_overrides_the_server_default(make_server):
    server = make_server(result_history=5)

    @server.task(keep_results=1)
    async def once(run: ft.Run, params: ft.Params) -> ft.Result:
        return ft.ok()

    async with running_server(server) as running, running.client() as client:
        await client.post("/run/once", json={"jobId": "a"})
        await client.post("/run/once", json={"jobId": "b"})
        assert (await client.get("/result/a")).status_code == 404
        assert (await client.get("/result/b")).status_code == 200


async def test_max_duration_cancels_the_job(make_server):
    server = make_server(max_duration=0.2)
    add_tasks(server)
    async with running_server(server) as running, running.client() as client:
        body = (await client.post("/run/slow")).json()
    assert body["error"] == {
        "code": "max_duration_exceeded",
        "message": "job exceeded maximum duration (200ms)",
        "step": "waiting",
    }


async def test_sync_timeout_answers_504_cancels_and_stores_the_result(make_server):
    server = make_server(sync_timeout=0.3)
    events = add_tasks(server)
    events["cleanup_gate"] = trio.Event()

    @server.task
    async def stubborn(run: ft.Run, params: ft.Params) -> ft.Result:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await events["cleanup_gate"].wait()
        return ft.ok()

    async with running_server(server) as running, running.client() as client:
        response = await client.post("/run/stubborn", json={"jobId": "t1"})
        assert response.status_code == 504
        assert response.json() == {
            "error": "Sync mode timeout exceeded (300ms). Use callbackUrl for long-running tasks."
        }
        # Still cleaning up: busy until its result is stored.
        busy = await client.post("/run/stubborn", json={"jobId": "t2"})
        assert busy.status_code == 409
        events["cleanup_gate"].set()
        with trio.fail_after(5):
            while (stored := await client.get("/result/t1")).status_code == 404:
                await trio.sleep(0.01)
        assert stored.json()["error"]["code"] == "cancelled"


async def test_sync_caller_disconnecting_cancels_its_job(served):
    async with trio.open_nursery() as nursery:

        async def call_and_hang_up() -> None:
            with trio.move_on_after(5) as scope:
                async with httpx.AsyncClient(base_url=str(served.base_url), headers=AUTH) as c:
                    nursery.start_soon(_cancel_when, served.events["slow_started"], scope)
                    await c.post("/run/slow", json={"jobId": "dropped"})

        nursery.start_soon(call_and_hang_up)
    with trio.fail_after(5):
        while (stored := await served.get("/result/dropped")).status_code == 404:
            await trio.sleep(0.01)
    assert stored.json()["error"] == {
        "code": "cancelled",
        "message": "sync caller disconnected",
        "step": "waiting",
    }


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


# -- /health, /readyz -----------------------------------------------------------------


async def test_health_snapshot_shape(served):
    await served.post("/run/greet", json={"jobId": "g1"})
    await served.post("/run/boom", json={"jobId": "b1"})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(served.post, "/run/slow", json={"jobId": "s1"}))
        await served.events["slow_started"].wait()
        health = (await served.get("/health")).json()
        await served.post("/stop/slow")
    assert health["name"] == "test-server" and health["status"] == "ok"
    assert re.fullmatch(r"\d+s", health["uptime"])
    tasks = health["tasks"]
    assert list(tasks) == sorted(tasks)
    greet = tasks["greet"]
    assert greet["status"] == "idle"
    assert greet["description"] == "Returns a greeting"
    assert greet["example"] == {"name": "World"}
    assert greet["lastJob"]["jobId"] == "g1" and greet["lastJob"]["success"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", greet["lastJob"]["finished"])
    assert greet["results"][0]["message"] == "Hello, World!"
    assert tasks["boom"]["results"][0]["error"] == "panic"
    assert tasks["boom"]["results"][0]["message"] == "kaboom"
    slow = tasks["slow"]
    assert slow["status"] == "running"
    assert slow["currentJob"]["jobId"] == "s1"
    assert slow["currentJob"]["currentStep"] == "waiting"
    assert "progress" not in slow["currentJob"]
    assert "lastStepAt" in slow["currentJob"]
    assert "description" not in slow and "results" not in slow and "lastJob" not in slow


async def test_progress_appears_in_health_with_percent(make_server):
    server = make_server()
    reported = trio.Event()

    @server.task
    async def counting(run: ft.Run, params: ft.Params) -> ft.Result:
        await run.progress(2, 5, "item %d", 2)
        reported.set()
        await trio.sleep_forever()
        return ft.ok()

    async with running_server(server) as running, running.client() as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.post, "/run/counting")
            await reported.wait()
            job = (await client.get("/health")).json()["tasks"]["counting"]["currentJob"]
            await client.post("/stop/counting")
    assert job["progress"] == {"current": 2, "total": 5, "percent": 40}
    assert job["currentStep"] == "item 2"


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_readyz_reports_the_readiness_check_error(make_server, asynchronous):
    state = {"ready": True}

    def check() -> None:
        if not state["ready"]:
            raise RuntimeError("database unreachable")

    async def async_check() -> None:
        await trio.lowlevel.checkpoint()
        check()

    server = make_server(readiness=async_check if asynchronous else check)
    add_tasks(server)
    async with running_server(server) as running, running.client() as client:
        assert (await client.get("/readyz")).status_code == 200
        state["ready"] = False
        response = await client.get("/readyz")
    assert (response.status_code, response.json()) == (503, {"error": "database unreachable"})


# -- draining -------------------------------------------------------------------------


async def test_draining_refuses_runs_readiness_and_events_but_serves_stop_and_result(make_server):
    server = make_server(shutdown_timeout=5)
    events = add_tasks(server)
    async with running_server(server) as running, running.client() as client:
        await client.post("/run/greet", json={"jobId": "before"})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(client.post, "/run/lingering", json={"jobId": "l1"}))
            await until_running(client, "lingering")
            running.request_shutdown()
            run = await client.post("/run/greet")
            assert (run.status_code, run.json()) == (503, {"error": "Server is shutting down"})
            readyz = await client.get("/readyz")
            assert (readyz.status_code, readyz.json()) == (
                503,
                {"error": "server is shutting down"},
            )
            assert (await client.get("/events")).status_code == 503
            assert (await client.get("/health")).json()["status"] == "draining"
            assert (await client.get("/result/before")).status_code == 200
            assert (await client.post("/stop/lingering")).status_code == 200
            events["release"].set()


# -- configuration ----------------------------------------------------------------------


async def test_config_error_lists_every_problem(monkeypatch):
    monkeypatch.delenv("FUNTASK_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("FUNTASK_DEAD_LETTER_DIR", raising=False)
    server = ft.Server("bad", sync_timeout=0, callback_allowlist=["ftp://x"])

    @server.route("/health")
    async def mine() -> str:
        return "mine"

    with pytest.raises(ft.ConfigError) as caught:
        await server.serve(port=0, handle_signals=False)
    problems = caught.value.problems
    assert any("no tasks" in problem for problem in problems)
    assert any("auth token" in problem for problem in problems)
    assert any("dead-letter directory" in problem for problem in problems)
    assert any("collides with a built-in route" in problem for problem in problems)
    assert any("sync_timeout" in problem for problem in problems)
    assert any("ftp://x" in problem for problem in problems)


def test_tasks_must_be_async_functions(make_server):
    server = make_server()
    with pytest.raises(TypeError, match="async function"):

        @server.task
        def not_async(run, params):  # type: ignore[no-untyped-def]
            return ft.ok()


async def test_env_variables_configure_token_and_dead_letter_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("FUNTASK_AUTH_TOKEN", "from-env")
    monkeypatch.setenv("FUNTASK_DEAD_LETTER_DIR", str(tmp_path / "dl"))
    server = ft.Server("env")
    assert server.auth_token == "from-env"
    assert server.dead_letter_dir == tmp_path / "dl"


async def test_custom_routes_are_served_unauthenticated(make_server):
    server = make_server()
    add_tasks(server)

    @server.route("/api/ping", methods=["GET", "POST"])
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    async with running_server(server) as running:
        async with httpx.AsyncClient(base_url=running.url) as anonymous:
            assert (await anonymous.get("/api/ping")).json() == {"pong": "yes"}
            assert (await anonymous.post("/api/ping")).status_code == 200


async def test_registering_a_name_again_replaces_the_task(make_server):
    server = make_server()

    @server.task("t")
    async def first(run: ft.Run, params: ft.Params) -> ft.Result:
        return ft.ok("first")

    @server.task("t")
    async def second(run: ft.Run, params: ft.Params) -> ft.Result:
        return ft.ok("second")

    async with running_server(server) as running, running.client() as client:
        assert (await client.post("/run/t")).json()["message"] == "second"


# -- regressions found in review -----------------------------------------------------


async def test_an_exception_whose_str_fails_is_a_panic_and_the_server_carries_on(make_server):
    server = make_server()
    add_tasks(server)

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text for you")

    @server.task
    async def weird(run: ft.Run, params: ft.Params) -> ft.Result:
        raise Unprintable

    async with running_server(server) as running, running.client() as client:
        weird = (await client.post("/run/weird")).json()
        greet = await client.post("/run/greet")
    assert weird["error"] == {"code": "panic", "message": "Unprintable"}
    assert greet.status_code == 200


async def test_a_run_whose_body_arrives_after_shutdown_began_answers_503(make_server):
    server = make_server(shutdown_timeout=5)
    events = add_tasks(server)
    async with running_server(server) as running, running.client() as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(client.post, "/run/lingering", json={}))
            await until_running(client, "lingering")
            host, port = running.url.removeprefix("http://").rsplit(":", 1)
            body = b'{"params":{}}'
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                await stream.send_all(
                    b"POST /run/greet HTTP/1.1\r\nHost: x\r\n"
                    + f"Authorization: {AUTH['Authorization']}\r\n".encode()
                    + b"Content-Length: %d\r\n\r\n" % len(body)
                )
                await trio.sleep(0.1)  # the handler now waits for the body
                running.request_shutdown()
                await stream.send_all(body)
                answer = b""
                with trio.fail_after(5):
                    while not answer.endswith(b"}\n"):
                        answer += await stream.receive_some()
            events["release"].set()
    assert answer.startswith(b"HTTP/1.1 503")
    assert answer.endswith(b'{"error":"Server is shutting down"}\n')


async def test_stop_keeps_answering_cancellation_requested_while_the_job_is_busy(make_server):
    server = make_server()
    events = add_tasks(server)
    async with running_server(server) as running, running.client() as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(client.post, "/run/lingering", json={"jobId": "L"}))
            await until_running(client, "lingering")
            first = (await client.post("/stop/lingering")).json()
            second = (await client.post("/stop/lingering")).json()
            events["release"].set()
        idle = (await client.post("/stop/lingering")).json()
    expected = {"task": "lingering", "jobId": "L", "message": "Cancellation requested"}
    assert first == second == expected
    assert idle == {"task": "lingering", "message": "No running job"}


async def test_results_are_found_by_any_job_id_including_slashes_and_shared_ones(make_server):
    server = make_server(result_history=1)

    @server.task
    async def one(run: ft.Run, params: ft.Params) -> ft.Result:
        return ft.ok("one")

    @server.task
    async def two(run: ft.Run, params: ft.Params) -> ft.Result:
        return ft.ok("two")

    async with running_server(server) as running, running.client() as client:
        await client.post("/run/one", json={"jobId": "a/b"})
        slashed = await client.get("/result/a%2Fb")
        await client.post("/run/one", json={"jobId": "line\nbreak"})
        newline = await client.get("/result/line%0Abreak")
        await client.post("/run/one", json={"jobId": "shared"})
        await client.post("/run/two", json={"jobId": "shared"})
        await client.post("/run/two", json={"jobId": "newer"})  # evicts two's "shared"
        shared = await client.get("/result/shared")
    assert slashed.status_code == 200 and slashed.json()["jobId"] == "a/b"
    assert newline.status_code == 200 and newline.json()["jobId"] == "line\nbreak"
    assert shared.status_code == 200 and shared.json()["message"] == "one"


async def test_a_blocking_readiness_check_does_not_stall_the_server(make_server):
    import time

    server = make_server(readiness=lambda: time.sleep(0.5))
    add_tasks(server)
    async with running_server(server) as running, running.client() as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.get, "/readyz")
            await trio.sleep(0.1)
            started = trio.current_time()
            assert (await client.get("/livez")).status_code == 200
            assert trio.current_time() - started < 0.3


async def test_a_sync_job_given_up_on_at_shutdown_keeps_its_result_as_a_dead_letter(
    make_server, dead_letter_dir
):
    server = make_server(shutdown_timeout=0.2)
    events = add_tasks(server)

    async with running_server(server) as running, running.client() as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(client.post, "/run/lingering", json={"jobId": "sync-1"}))
            await until_running(client, "lingering")
            running.request_shutdown()
            with trio.fail_after(5):
                while not (dead_letter_dir / "sync-1.json").exists():
                    await trio.sleep(0.01)
            events["release"].set()
    letter = json.loads((dead_letter_dir / "sync-1.json").read_bytes())
    assert letter["error"] == {
        "code": "worker_shutdown",
        "message": "server is shutting down",
        "step": "holding on",
    }
    assert not (dead_letter_dir / "sync-1.callback").exists()  # nowhere to replay it to
