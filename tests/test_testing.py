"""funtask_trio.testing: runs, params, run_task, running_server and the callback receiver."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest
import trio
import trio.lowlevel

import funtask_trio as ft
from funtask_trio.testing import (
    CallbackReceiver,
    configured_for_testing,
    make_params,
    make_params_raw,
    make_run,
    open_callback_receiver,
    run_task,
    running_server,
)


async def countdown(run: ft.Run, params: ft.Params) -> ft.Result:
    start = params.int("start")
    for i in range(start):
        await run.progress(i + 1, start, "T-%d", start - i)
        await trio.lowlevel.checkpoint()
    return ft.ok("done").with_data(start=start)


# -- make_run / run_task ------------------------------------------------------------


async def test_make_run_records_every_step_in_order() -> None:
    run = make_run(job_id="job-1", task="countdown")
    result = await run_task(countdown, {"start": 3}, run=run)
    assert result.success and result.data == {"start": 3}
    assert run.job_id == "job-1" and run.task == "countdown"
    assert run.steps == ("T-3", "T-2", "T-1")
    assert run.progress_current == 3 and run.percent == 100


async def test_make_run_defaults_to_a_fresh_job_id() -> None:
    assert make_run().job_id != make_run().job_id


async def test_cancelled_run_cleans_up_and_reports_stopped_by_request() -> None:
    cleaned_up = []

    async def holds_a_resource(run: ft.Run, params: ft.Params) -> ft.Result:
        try:
            await run.step("waiting")
            await trio.sleep_forever()
        finally:
            cleaned_up.append(run.job_id)
        return ft.ok()

    run = make_run(job_id="j")
    async with trio.open_nursery() as nursery:

        async def stop_when_waiting() -> None:
            await run.wait_for_step("waiting")
            run.cancel()

        nursery.start_soon(stop_when_waiting)
        result = await run_task(holds_a_resource, run=run)
    assert cleaned_up == ["j"]
    assert (result.success, result.error_code, result.message) == (
        False,
        "cancelled",
        "stopped by request",
    )
    assert result.last_step == "waiting"


async def test_cancel_at_step_stops_the_job_there() -> None:
    run = make_run()
    result = await run_task(countdown, {"start": 10}, run=run, cancel_at_step="T-8")
    assert result.error_code == "cancelled"
    assert run.steps[:3] == ("T-10", "T-9", "T-8")
    assert len(run.steps) < 10


async def test_cancel_at_step_with_a_predicate() -> None:
    result = await run_task(countdown, {"start": 5}, cancel_at_step=lambda step: step.endswith("2"))
    assert result.error_code == "cancelled"
    assert result.last_step == "T-2"


async def test_cancel_before_start_stops_at_the_first_checkpoint() -> None:
    run = make_run()
    run.cancel("server is shutting down")
    result = await run_task(countdown, {"start": 3}, run=run)
    assert (result.error_code, result.message) == ("cancelled", "server is shutting down")


async def test_wait_for_step_fails_instead_of_hanging_when_the_job_ends() -> None:
    run = make_run()
    await run_task(countdown, {"start": 2}, run=run)
    with pytest.raises(RuntimeError, match="ended without a step matching 'T-9'"):
        await run.wait_for_step("T-9")
    assert await run.wait_for_step() == "T-2"


async def test_run_task_turns_errors_into_results_as_the_server_does() -> None:
    assert (await run_task(countdown, {})).error_code == "invalid_params"

    async def raises(run: ft.Run, params: ft.Params) -> ft.Result:
        raise RuntimeError("boom")

    result = await run_task(raises)
    assert (result.error_code, result.message) == ("panic", "boom")


async def test_run_task_max_duration() -> None:
    async def slow(run: ft.Run, params: ft.Params) -> ft.Result:
        await trio.sleep_forever()
        raise AssertionError

    result = await run_task(slow, max_duration=0.01)
    assert result.error_code == "max_duration_exceeded"


# -- params ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"x": math.nan},
        {"x": math.inf},
        {"x": {1, 2}},
        {"x": object()},
        {"x": b"bytes"},
        {"nested": {"deep": [1, -math.inf]}},
        {"nested": {3: "non-string key"}},
    ],
)
def test_make_params_refuses_what_json_cannot_carry(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="params"):
        make_params(bad)


def test_make_params_round_trips_like_the_wire() -> None:
    params = make_params({"pair": (1, 2), "n": 5, "s": "x", "none": None, "f": 1.5})
    assert params.raw == {"pair": [1, 2], "n": 5, "s": "x", "none": None, "f": 1.5}
    assert params.int("n") == 5
    assert make_params().raw == {}


async def test_make_params_raw_keeps_invalid_values_for_validation_tests() -> None:
    params = make_params_raw({"start": math.nan, "when": object()})
    assert math.isnan(params.raw["start"])

    result = await run_task(countdown, params)
    assert result.error_code == "invalid_params"
    assert "start (expected int)" in result.message


# -- configured_for_testing / running_server -----------------------------------------


def test_configured_for_testing_fills_in_and_restores(tmp_path: Path) -> None:
    server = ft.Server("bare", auth_token="", callback_allowlist=["http://a.example"])
    server.dead_letter_dir = None
    with configured_for_testing(
        server, dead_letter_dir=tmp_path, allow_callbacks_to=["http://127.0.0.1:1"]
    ):
        assert server.auth_token and server.auth_token.startswith("test-")
        assert server.dead_letter_dir == tmp_path
        assert server.callback_allowlist == ["http://a.example", "http://127.0.0.1:1"]
    assert (server.auth_token, server.dead_letter_dir) == ("", None)
    assert server.callback_allowlist == ["http://a.example"]


def test_configured_for_testing_keeps_what_the_server_has(tmp_path: Path) -> None:
    server = ft.Server("configured", auth_token="mine", dead_letter_dir=tmp_path / "own")
    with configured_for_testing(server, dead_letter_dir=tmp_path / "other"):
        assert server.auth_token == "mine"
        assert server.dead_letter_dir == tmp_path / "own"


async def test_running_server_serves_and_stops(make_server) -> None:
    server = make_server()
    server.task(countdown)
    async with running_server(server) as running:
        async with running.client() as client:
            response = await client.post("/run/countdown", json={"params": {"start": 2}})
        assert response.json()["data"] == {"start": 2}
        async with running.funtask_client() as typed:
            assert (await typed.run("countdown", {"start": 1})).success
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(running.url + "/livez")


# -- callback receiver -----------------------------------------------------------------


async def test_receiver_records_headers_body_and_json() -> None:
    async with open_callback_receiver() as receiver, httpx.AsyncClient() as client:
        assert receiver.url == receiver.origin + "/callback"
        for n in range(2):  # one kept-alive connection
            response = await client.post(
                receiver.url,
                content=b'{"jobId":"j%d","success":true}' % n,
                headers={"Content-Type": "application/json", "X-Extra": "yes"},
            )
            assert response.status_code == 200
        await client.post(receiver.url, content=b"not json")
    first = receiver.received[0]
    assert first.method == "POST" and first.path == "/callback"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["x-extra"] == "yes"
    assert first.body == b'{"jobId":"j0","success":true}'
    assert first.json == {"jobId": "j0", "success": True}
    assert first.job_id == "j0" and first.accepted
    assert [callback.job_id for callback in receiver.received] == ["j0", "j1", None]
    assert receiver.received[2].json is None


async def test_receiver_fails_the_next_attempts_as_told() -> None:
    async with open_callback_receiver() as receiver, httpx.AsyncClient() as client:
        receiver.fail_next(2, status=503, retry_after=0)
        receiver.fail_next(1, status=410)
        answers = [await client.post(receiver.url, content=b'{"jobId":"j"}') for _ in range(4)]
    assert [answer.status_code for answer in answers] == [503, 503, 410, 200]
    assert answers[0].headers["retry-after"] == "0"
    assert "retry-after" not in answers[2].headers
    assert [callback.status for callback in receiver.callbacks_for("j")] == [503, 503, 410, 200]


async def test_receiver_wait_for_waits_for_an_accepted_callback() -> None:
    async with open_callback_receiver() as receiver, httpx.AsyncClient() as client:
        receiver.fail_next(1, status=500)

        async def deliver_twice() -> None:
            await client.post(receiver.url, content=b'{"jobId":"late"}')
            await client.post(receiver.url, content=b'{"jobId":"late"}')

        async with trio.open_nursery() as nursery:
            nursery.start_soon(deliver_twice)
            first_attempt = await receiver.wait_for("late", accepted=False)
            delivered = await receiver.wait_for("late")
    assert first_attempt.status == 500
    assert delivered.status == 200


async def test_receiver_wait_for_times_out_with_what_arrived() -> None:
    async with open_callback_receiver() as receiver, httpx.AsyncClient() as client:
        await client.post(receiver.url, content=b'{"jobId":"other"}')
        with pytest.raises(TimeoutError, match=r"job 'missing'.*'other', 200"):
            await receiver.wait_for("missing", timeout=0.05)


async def test_receiver_url_before_serving_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not serving"):
        CallbackReceiver().url  # noqa: B018


async def test_server_retries_into_the_receiver_then_deletes_the_dead_letter(
    make_server, dead_letter_dir: Path
) -> None:
    async with open_callback_receiver() as receiver:
        server = make_server(callback_allowlist=[receiver.origin])
        server.task(countdown)
        receiver.fail_next(2, status=503, retry_after=0)
        async with running_server(server) as running, running.client() as client:
            response = await client.post(
                "/run/countdown",
                json={"jobId": "cb-1", "callbackUrl": receiver.url, "params": {"start": 1}},
            )
            assert response.status_code == 202
            delivered = await receiver.wait_for("cb-1")
            with trio.fail_after(5):  # stored (and the letter removed) after delivery
                while (await client.get("/result/cb-1")).status_code != 200:
                    await trio.sleep(0.01)
    assert [callback.status for callback in receiver.callbacks_for("cb-1")] == [503, 503, 200]
    assert delivered.json["data"] == {"start": 1}
    assert not (dead_letter_dir / "cb-1.json").exists()


async def test_gone_receiver_leaves_the_dead_letter(make_server, dead_letter_dir: Path) -> None:
    async with open_callback_receiver() as receiver:
        server = make_server(callback_allowlist=[receiver.origin])
        server.task(countdown)
        receiver.fail_next(1, status=410)
        async with running_server(server) as running, running.client() as client:
            await client.post(
                "/run/countdown",
                json={"jobId": "cb-2", "callbackUrl": receiver.url, "params": {"start": 1}},
            )
            attempt = await receiver.wait_for("cb-2", accepted=False)
            with trio.fail_after(5):
                while (await client.get("/result/cb-2")).status_code != 200:
                    await trio.sleep(0.01)
    assert attempt.status == 410
    assert len(receiver.callbacks_for("cb-2")) == 1
    assert (dead_letter_dir / "cb-2.json").read_bytes() == attempt.body
