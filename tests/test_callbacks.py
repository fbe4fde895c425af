"""Async runs end to end: callback delivery to a real local receiver, dead letters, draining.

Every test serves the funtask server and a scripted receiver over loopback
TCP. Retry schedules run under a `trio.testing.MockClock` (the
``virtual_clock`` fixture): minutes of waiting in milliseconds.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import stat
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trio

import funtask_trio as ft
from _receiver import Answer, Received, ScriptedReceiver, serve_receiver
from funtask_trio._deadletters import DeadLetter, DeadLetterDir
from funtask_trio.testing import RunningServer, running_server

T = TypeVar("T")

SECRET = "whsec_" + base64.b64encode(b"funtask-trio callback test secret").decode()


@pytest.fixture
def virtual_clock() -> trio.testing.MockClock:
    """``MockClock(autojump_threshold=0)`` that stands still while a worker thread is busy.

    Dead letters are written and removed in `trio.to_thread` workers. A plain
    autojump clock sees the loop idle while such a thread runs and jumps to
    the next deadline, often a timeout that is not due at all (hypercorn's
    lifespan timeout, a test's guard); with the machine under load, any
    positive threshold can be outrun by an ``fsync`` the same way.
    """
    clock = trio.testing.MockClock(autojump_threshold=0)
    jump_to_next_deadline = clock._autojump  # what trio's run loop calls when idle

    def autojump_unless_a_thread_is_busy() -> None:
        if not trio.to_thread.current_default_thread_limiter().statistics().borrowed_tokens:
            jump_to_next_deadline()

    clock._autojump = autojump_unless_a_thread_is_busy  # type: ignore[method-assign]
    return clock


@pytest.fixture
async def receiver(nursery: trio.Nursery) -> ScriptedReceiver:
    receiver = ScriptedReceiver()
    await nursery.start(serve_receiver, receiver)
    return receiver


def add_tasks(server: ft.Server) -> None:
    @server.task
    async def greet(run: ft.Run, params: ft.Params) -> ft.Result:
        name = params.str("name", default="World")
        return ft.ok(f"Hello, {name}!").with_data(name=name)

    @server.task
    async def sleeper(run: ft.Run, params: ft.Params) -> ft.Result:
        await run.step("sleeping")
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    @server.task
    async def stubborn(run: ft.Run, params: ft.Params) -> ft.Result:
        await run.step("holding on")
        with trio.CancelScope(shield=True):
            await trio.sleep(params.float("hold", default=100))
        return ft.ok("held")


@contextlib.asynccontextmanager
async def serving(
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    **options: Any,
) -> AsyncIterator[tuple[RunningServer, httpx.AsyncClient]]:
    options.setdefault("callback_allowlist", [receiver.url])
    server = make_server(**options)
    add_tasks(server)
    async with (
        running_server(server) as running,
        httpx.AsyncClient(
            base_url=running.url,
            headers={"Authorization": f"Bearer {running.token}"},
            timeout=30,
            # A fresh connection per request: never racing the server's keep-alive close.
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as client,
    ):
        yield running, client


async def start(
    client: httpx.AsyncClient,
    receiver: ScriptedReceiver,
    task: str,
    job_id: str,
    *,
    path: str = "/hook",
    params: dict[str, Any] | None = None,
) -> None:
    response = await client.post(
        f"/run/{task}",
        json={"jobId": job_id, "callbackUrl": receiver.url + path, "params": params or {}},
    )
    assert response.status_code == 202, response.text
    assert (
        response.content
        == json.dumps({"jobId": job_id}, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    )


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float = 1000) -> T:
    """`check()`'s first non-None value, polling at 10 ms and then ever longer (up to 1 s)."""
    interval = 0.01
    with trio.fail_after(timeout):
        while (value := await check()) is None:
            await trio.sleep(interval)
            interval = min(interval * 1.5, 1.0)
    return value


async def stored_result(client: httpx.AsyncClient, job_id: str) -> httpx.Response:
    """``GET /result`` once the job's result is stored (after its delivery ended)."""

    async def check() -> httpx.Response | None:
        response = await client.get(f"/result/{urllib.parse.quote(job_id, safe='')}")
        assert response.status_code in (200, 404)
        return response if response.status_code == 200 else None

    return await eventually(check)


async def gone(*paths: Path) -> None:
    async def check() -> bool | None:
        return True if not any(path.exists() for path in paths) else None

    await eventually(check)


def gaps(received: list[Received]) -> list[float]:
    return [
        round(later.at - earlier.at, 3)
        for earlier, later in zip(received, received[1:], strict=False)
    ]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def letter_files(directory: Path, job_id: str) -> tuple[Path, Path]:
    return directory / f"{job_id}.json", directory / f"{job_id}.callback"


# -- the happy path --------------------------------------------------------------


async def test_async_run_answers_202_and_posts_the_result_bytes_once(
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    dead_letter_dir: Path,
) -> None:
    async with serving(make_server, receiver) as (_, client):
        await start(client, receiver, "greet", "job-1", params={"name": "Trio"})
        [delivery] = await receiver.wait_for(1)
        result = await stored_result(client, "job-1")
        await trio.sleep(100)
    assert len(receiver.received) == 1
    assert (delivery.method, delivery.path) == ("POST", "/hook")
    assert delivery.headers["content-type"] == "application/json"
    assert not any(name.startswith("webhook-") for name in delivery.headers)
    # /result adds a newline; otherwise the callback carries exactly the stored bytes.
    assert delivery.body + b"\n" == result.content
    document = json.loads(delivery.body)
    assert document == {
        "jobId": "job-1",
        "success": True,
        "message": "Hello, Trio!",
        "duration": document["duration"],
        "data": {"name": "Trio"},
    }
    assert os.listdir(dead_letter_dir) == []


async def test_async_run_without_job_id_gets_a_uuid_that_the_callback_carries(
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
) -> None:
    async with serving(make_server, receiver) as (_, client):
        response = await client.post("/run/greet", json={"callbackUrl": receiver.url + "/hook"})
        assert response.status_code == 202
        job_id = response.json()["jobId"]
        [delivery] = await receiver.wait_for(1)
        await stored_result(client, job_id)
    assert len(job_id) == 36 and job_id.count("-") == 4
    assert json.loads(delivery.body)["jobId"] == job_id


async def test_dead_letter_holds_the_delivered_bytes_until_a_2xx(
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    dead_letter_dir: Path,
) -> None:
    receiver.answer(Answer(500))
    letter, record = letter_files(dead_letter_dir, "job-2")
    async with serving(make_server, receiver) as (_, client):
        await start(client, receiver, "greet", "job-2")
        [first] = await receiver.wait_for(1)
        await trio.sleep(0.5)  # inside the 1 s wait before the second attempt
        assert sorted(os.listdir(dead_letter_dir)) == ["job-2.callback", "job-2.json"]
        assert letter.read_bytes() == first.body
        assert json.loads(record.read_bytes()) == {
            "callbackUrl": receiver.url + "/hook",
            "task": "greet",
        }
        assert mode(letter) == 0o600 and mode(record) == 0o600
        # Still delivering: not stored yet, and the slot stays taken.
        assert (await client.get("/result/job-2")).status_code == 404
        _, second = await receiver.wait_for(2)
        result = await stored_result(client, "job-2")
    assert second.at - first.at == pytest.approx(1.0, abs=0.01)
    assert second.body == first.body
    assert result.content == first.body + b"\n"
    assert os.listdir(dead_letter_dir) == []


@pytest.mark.parametrize("status", [201, 202, 204, 299])
async def test_any_2xx_counts_as_delivered(
    status: int,
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    dead_letter_dir: Path,
) -> None:
    receiver.default = Answer(status)
    async with serving(make_server, receiver) as (_, client):
        await start(client, receiver, "greet", "accepted")
        await stored_result(client, "accepted")
        await trio.sleep(1000)
    assert len(receiver.received) == 1
    assert os.listdir(dead_letter_dir) == []


async def test_deliveries_share_one_pooled_connection(
    make_server: Callable[..., ft.Server], receiver: ScriptedReceiver
) -> None:
    async with serving(make_server, receiver) as (_, client):
        for number in range(3):
            await start(client, receiver, "greet", f"pooled-{number}")
            await stored_result(client, f"pooled-{number}")
    ports = {delivery.client_port for delivery in receiver.received}
    assert len(receiver.received) == 3 and len(ports) == 1


# -- retries -------------------------------------------------------------------------


async def test_failed_deliveries_follow_the_retry_schedule_then_keep_the_dead_letter(
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    dead_letter_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="funtask_trio")
    receiver.default = Answer(500)
    async with serving(make_server, receiver, callback_retries=7) as (_, client):
        await start(client, receiver, "greet", "job-retry")
        received = await receiver.wait_for(7)
        result = await stored_result(client, "job-retry")
        await trio.sleep(1000)
        # The slot was released when delivery ended: the task takes new runs.
        assert (await client.post("/run/greet", json={})).status_code == 200
    assert len(receiver.received) == 7
    assert gaps(received) == [1.0, 5.0, 15.0, 60.0, 120.0, 120.0]
    assert all(delivery.body == received[0].body for delivery in received)
    letter, record = letter_files(dead_letter_dir, "job-retry")
    assert letter.read_bytes() + b"\n" == result.content
    assert json.loads(record.read_bytes())["callbackUrl"] == receiver.url + "/hook"
    [gave_up] = [r for r in caplog.records if "after 7 attempt(s)" in r.getMessage()]
    assert gave_up.levelno == logging.ERROR
    assert (getattr(gave_up, "task", None), getattr(gave_up, "job_id", None)) == (
        "greet",
        "job-retry",
    )


async def test_callback_retries_one_means_a_single_attempt(
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    dead_letter_dir: Path,
) -> None:
    receiver.default = Answer(502)
    async with serving(make_server, receiver, callback_retries=1) as (_, client):
        await start(client, receiver, "greet", "once")
        await stored_result(client, "once")
        await trio.sleep(1000)
    assert len(receiver.received) == 1
    assert (dead_letter_dir / "once.json").exists()


async def test_an_attempt_that_times_out_is_retried(
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    dead_letter_dir: Path,
) -> None:
    receiver.answer(Answer(hang=True))  # never answers; then 200s
    async with serving(make_server, receiver, callback_timeout=3) as (_, client):
        await start(client, receiver, "greet", "slow-receiver")
        received = await receiver.wait_for(2)
        await stored_result(client, "slow-receiver")
    # 3 s per-attempt timeout, then the 1 s wait.
    assert gaps(received) == [4.0]
    assert os.listdir(dead_letter_dir) == []


async def test_connection_refused_is_retried_on_schedule(
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    dead_letter_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="funtask_trio")
    # Port 1 on loopback: nothing listens, every connect is refused at once.
    async with serving(
        make_server, receiver, callback_allowlist=["http://127.0.0.1:1"], callback_retries=3
    ) as (_, client):
        response = await client.post(
            "/run/greet", json={"jobId": "refused", "callbackUrl": "http://127.0.0.1:1/hook"}
        )
        assert response.status_code == 202
        started = trio.current_time()
        await stored_result(client, "refused")
        finished = trio.current_time()
    # Three attempts, 1 s and 5 s apart, all refused (polling adds at most 1 s).
    assert 6.0 <= finished - started <= 7.0
    assert "after 3 attempt(s) (ConnectError" in caplog.text
    assert (dead_letter_dir / "refused.json").exists()


async def test_410_gone_stops_retrying_and_keeps_the_dead_letter(
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    dead_letter_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="funtask_trio")
    receiver.default = Answer(410)
    async with serving(make_server, receiver) as (_, client):
        await start(client, receiver, "greet", "gone")
        await stored_result(client, "gone")
        await trio.sleep(1000)
    assert len(receiver.received) == 1
    assert (dead_letter_dir / "gone.json").read_bytes() == receiver.received[0].body
    assert "410 Gone" in caplog.text


async def test_retry_after_on_429_and_503_replaces_the_schedule_step(
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    dead_letter_dir: Path,
) -> None:
    receiver.answer(
        Answer(429, (("Retry-After", "42"),)),
        Answer(503, (("Retry-After", "7"),)),
        Answer(500, (("Retry-After", "30"),)),  # only 429 and 503 are honoured: step 3 (15 s)
        Answer(429, (("Retry-After", "3600"),)),  # capped at 120 s
        Answer(503, (("Retry-After", "soon"),)),  # unparseable: step 5 (120 s)
        Answer(429, (("Retry-After", "²"),)),  # isdigit() but not a number: step 6 (120 s)
    )
    async with serving(make_server, receiver, callback_retries=7) as (_, client):
        await start(client, receiver, "greet", "throttled")
        received = await receiver.wait_for(7)
        await stored_result(client, "throttled")
    assert gaps(received) == [42.0, 7.0, 15.0, 120.0, 120.0, 120.0]
    assert os.listdir(dead_letter_dir) == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_not_followed(
    status: int,
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    dead_letter_dir: Path,
) -> None:
    receiver.answer(*[Answer(status, (("Location", receiver.url + "/elsewhere"),))] * 2)
    async with serving(make_server, receiver, callback_retries=2) as (_, client):
        await start(client, receiver, "greet", "redirected")
        await stored_result(client, "redirected")
        await trio.sleep(1000)
    assert [delivery.path for delivery in receiver.received] == ["/hook", "/hook"]
    assert (dead_letter_dir / "redirected.json").exists()


# -- signatures ------------------------------------------------------------------


async def test_signed_callbacks_verify_and_keep_one_webhook_id_across_attempts(
    make_server: Callable[..., ft.Server], receiver: ScriptedReceiver
) -> None:
    # Real clock: the timestamp is wall-clock seconds, fresh on each attempt.
    receiver.answer(Answer(500))
    async with serving(make_server, receiver, callback_secret=SECRET) as (_, client):
        await start(client, receiver, "greet", "signed")
        first, second = await receiver.wait_for(2, timeout=10)
        await stored_result(client, "signed")
    for delivery in (first, second):
        assert delivery.headers["content-type"] == "application/json"
        assert delivery.headers["webhook-id"] == "signed"
        assert abs(int(delivery.headers["webhook-timestamp"]) - time.time()) < 10
        assert delivery.headers["webhook-signature"].startswith("v1,")
        assert ft.verify_callback(SECRET, delivery.headers, delivery.body)
        assert not ft.verify_callback(SECRET, delivery.headers, delivery.body + b" ")
        other = "whsec_" + base64.b64encode(b"another secret entirely").decode()
        assert not ft.verify_callback(other, delivery.headers, delivery.body)
    assert int(second.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])
    assert second.headers["webhook-signature"] != first.headers["webhook-signature"]
    assert second.body == first.body


# -- busy while delivering, and stopping ---------------------------------------------


async def test_task_stays_busy_while_its_delivery_is_in_progress(
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
) -> None:
    receiver.answer(Answer(hang=True))
    async with serving(make_server, receiver, callback_timeout=10_000) as (_, client):
        await start(client, receiver, "greet", "delivering")
        await receiver.wait_for(1)
        busy = await client.post(
            "/run/greet", json={"jobId": "other", "callbackUrl": receiver.url + "/hook"}
        )
        sync_busy = await client.post("/run/greet", json={})
        same = await client.post(
            "/run/greet", json={"jobId": "delivering", "callbackUrl": receiver.url + "/hook"}
        )
        not_yet = await client.get("/result/delivering")
        health = (await client.get("/health")).json()
        receiver.release()
        result = await stored_result(client, "delivering")
        after = await client.post("/run/greet", json={"jobId": "after"})
    assert busy.status_code == 409
    assert busy.json() == {
        "error": "Task is busy with a different job",
        "task": "greet",
        "currentJob": {"jobId": "delivering", "running": busy.json()["currentJob"]["running"]},
    }
    assert sync_busy.status_code == 409
    assert same.status_code == 200
    assert same.json()["jobId"] == "delivering" and same.json()["status"] == "running"
    assert not_yet.status_code == 404
    assert health["tasks"]["greet"]["currentJob"]["jobId"] == "delivering"
    assert json.loads(result.content)["success"] is True
    assert after.status_code == 200


async def test_stopping_a_job_never_kills_the_delivery_of_its_result(
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    dead_letter_dir: Path,
) -> None:
    receiver.answer(Answer(hang=True))
    async with serving(make_server, receiver, callback_timeout=10_000) as (_, client):
        await start(client, receiver, "sleeper", "stopped")
        await trio.sleep(1)
        stop = await client.post("/stop/sleeper")
        [delivery] = await receiver.wait_for(1)
        again = await client.post("/stop/sleeper")  # the job is over; its delivery is not
        await trio.sleep(50)
        receiver.release()
        result = await stored_result(client, "stopped")
    assert stop.json() == {
        "task": "sleeper",
        "jobId": "stopped",
        "message": "Cancellation requested",
    }
    # Still busy delivering: cancelling again changes nothing, and says so as for any job.
    assert again.json()["message"] == "Cancellation requested"
    document = json.loads(delivery.body)
    assert document["error"] == {
        "code": "cancelled",
        "message": "stopped by request",
        "step": "sleeping",
    }
    assert result.content == delivery.body + b"\n"
    assert len(receiver.received) == 1
    assert os.listdir(dead_letter_dir) == []


# -- refusing up front -----------------------------------------------------------------


@pytest.mark.parametrize(
    "job_id",
    ["../escape", "a/b", "/etc/passwd", "a\\b", "..\\x", ".", "..", "nul\x00byte", "x" * 201],
)
async def test_a_job_id_that_cannot_name_a_dead_letter_is_refused_with_a_callback(
    job_id: str,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    dead_letter_dir: Path,
    tmp_path: Path,
) -> None:
    async with serving(make_server, receiver) as (_, client):
        refused = await client.post(
            "/run/greet", json={"jobId": job_id, "callbackUrl": receiver.url + "/hook"}
        )
        # Without a callback there is no dead letter, so the same jobId is fine.
        sync = await client.post("/run/greet", json={"jobId": job_id})
    assert refused.status_code == 400
    assert refused.content == b'{"error":"invalid jobId"}\n'
    assert sync.status_code == 200
    assert receiver.received == []
    assert os.listdir(dead_letter_dir) == []
    assert os.listdir(tmp_path) == ["dead-letters"]


@pytest.mark.parametrize(
    ("job_id", "header"),
    [
        ("...", "..."),
        (".hidden", ".hidden"),
        ("a:b", "a:b"),
        ("x.callback", "x.callback"),
        # A header carries printable ASCII only: the rest is percent-encoded (and so is %).
        (" with spaces ", "%20with%20spaces%20"),
        ("ünï", "%C3%BCn%C3%AF"),
        ("日本", "%E6%97%A5%E6%9C%AC"),
        ("tab\tnewline\n", "tab%09newline%0A"),
        ("50%", "50%25"),
    ],
)
async def test_unusual_but_safe_job_ids_are_signed_delivered_and_cleaned_up(
    job_id: str,
    header: str,
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    dead_letter_dir: Path,
) -> None:
    async with serving(make_server, receiver, callback_secret=SECRET) as (_, client):
        await start(client, receiver, "greet", job_id)
        [delivery] = await receiver.wait_for(1)
        await stored_result(client, job_id)
    assert json.loads(delivery.body)["jobId"] == job_id
    assert delivery.headers["webhook-id"] == header
    assert ft.verify_callback(SECRET, delivery.headers, delivery.body)
    assert os.listdir(dead_letter_dir) == []


async def test_a_job_id_with_a_lone_surrogate_does_not_take_the_server_down(
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
) -> None:
    async with serving(make_server, receiver) as (_, client):
        body = b'{"jobId":"\\ud800","callbackUrl":"%s/hook"}' % receiver.url.encode()
        started = await client.post("/run/greet", content=body)
        with contextlib.suppress(trio.TooSlowError):
            await receiver.wait_for(1, timeout=100)
        with trio.fail_after(100):  # the slot is free once delivery has ended
            while (await client.get("/result/\ufffd")).status_code != 200:
                await trio.sleep(0.01)
        after = await client.post("/run/greet", json={})
    # As Go decodes it: the lone surrogate becomes U+FFFD.
    assert started.status_code == 202 and started.json() == {"jobId": "\ufffd"}
    assert [json.loads(d.body)["jobId"] for d in receiver.received] == ["\ufffd"]
    assert after.status_code == 200


async def test_callback_url_checks_answer_the_protocol_texts(
    make_server: Callable[..., ft.Server], receiver: ScriptedReceiver
) -> None:
    port = receiver.url.rsplit(":", 1)[1]
    async with serving(make_server, receiver, callback_allowlist=[]) as (_, client):
        no_allowlist = await client.post(
            "/run/greet", json={"jobId": "../x", "callbackUrl": receiver.url + "/hooks"}
        )
    assert no_allowlist.status_code == 400
    assert no_allowlist.content == (
        b'{"error":"callback URLs not allowed (no allowlist configured)"}\n'
    )
    refused_urls = [
        receiver.url + "/hooks-evil",
        receiver.url + "/hook",
        f"http://user:pw@127.0.0.1:{port}/hooks",
        f"http://127.0.0.1:{port}@evil.example/hooks",
        f"https://127.0.0.1:{port}/hooks",
        f"http://localhost:{port}/hooks",
        f"http://127.0.0.1:{int(port) + 1}/hooks",
        receiver.url + "/hooks/../admin",
        receiver.url + "/hooks%2F..%2Fadmin",
        "ftp://127.0.0.1/hooks",
        "not a url",
    ]
    async with serving(make_server, receiver, callback_allowlist=[receiver.url + "/hooks"]) as (
        _,
        client,
    ):
        answers = [
            await client.post("/run/greet", json={"jobId": "x", "callbackUrl": url})
            for url in refused_urls
        ]
        # URL checks come before the jobId check.
        both_bad = await client.post(
            "/run/greet", json={"jobId": "a/b", "callbackUrl": receiver.url + "/evil"}
        )
        not_a_string = await client.post("/run/greet", json={"callbackUrl": 42})
        allowed = await client.post(
            "/run/greet", json={"jobId": "ok", "callbackUrl": receiver.url + "/hooks/x?y=1"}
        )
        await receiver.wait_for(1)
    for url, answer in zip(refused_urls, answers, strict=True):
        assert answer.status_code == 400, url
        assert answer.content == b'{"error":"callback URL not allowed"}\n', url
    assert both_bad.content == b'{"error":"callback URL not allowed"}\n'
    assert not_a_string.content == b'{"error":"invalid request body"}\n'
    assert allowed.status_code == 202
    assert [delivery.path for delivery in receiver.received] == ["/hooks/x"]


# -- the dead letter cannot be written ----------------------------------------------


async def test_unwritable_dead_letter_dir_means_no_callback_but_the_result_is_kept(
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    dead_letter_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="funtask_trio")
    async with serving(make_server, receiver) as (_, client):
        # Tests run as root, so permissions stop nothing: make every write fail
        # with ENOTDIR by turning the directory into a file under the server.
        shutil.rmtree(dead_letter_dir)
        await trio.Path(dead_letter_dir).write_text("not a directory any more\n")
        await start(client, receiver, "greet", "unsafe")
        result = await stored_result(client, "unsafe")
        await trio.sleep(1000)
        # The server keeps serving, sync and async.
        sync = await client.post("/run/greet", json={"params": {"name": "again"}})
        health = await client.get("/health")
        await start(client, receiver, "greet", "unsafe-2")
        await stored_result(client, "unsafe-2")
        await trio.sleep(1000)
    assert receiver.received == []
    assert json.loads(result.content)["message"] == "Hello, World!"
    assert sync.status_code == 200 and health.json()["status"] == "ok"
    failures = [r for r in caplog.records if "dead letter could not be written" in r.getMessage()]
    assert [getattr(r, "job_id", None) for r in failures] == ["unsafe", "unsafe-2"]
    for record in failures:
        assert record.levelno == logging.ERROR
        assert getattr(record, "task", None) == "greet"
        assert "greet" in record.getMessage()
        assert getattr(record, "job_id", "?") in record.getMessage()


# -- replay of letters left by an earlier run -------------------------------------------


async def test_pending_dead_letters_are_replayed_on_startup_with_the_full_schedule(
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    dead_letter_dir: Path,
) -> None:
    await trio.Path(dead_letter_dir).mkdir()
    body = b'{"jobId":"before-crash","success":true,"message":"from the last run","duration":"1ms"}'
    letter, record = letter_files(dead_letter_dir, "before-crash")
    letter.write_bytes(body)
    record.write_text(json.dumps({"callbackUrl": receiver.url + "/replayed", "task": "greet"}))
    # A letter as Go writes it (no callback record) has nowhere to go: left alone.
    go_letter = dead_letter_dir / "from-go.json"
    go_letter.write_bytes(b'{"jobId":"from-go","success":true,"duration":"0s"}')
    receiver.answer(Answer(503), Answer(500))
    async with serving(make_server, receiver, callback_secret=SECRET):
        received = await receiver.wait_for(3)
        await gone(letter, record)
        await trio.sleep(1000)
    assert [delivery.body for delivery in received] == [body] * 3
    assert [delivery.path for delivery in received] == ["/replayed"] * 3
    assert gaps(received) == [1.0, 5.0]
    assert all(delivery.headers["webhook-id"] == "before-crash" for delivery in received)
    assert all(ft.verify_callback(SECRET, d.headers, d.body) for d in received)
    assert len(receiver.received) == 3
    assert go_letter.exists()
    assert sorted(os.listdir(dead_letter_dir)) == ["from-go.json"]


async def test_a_letter_whose_origin_left_the_allowlist_is_kept_not_replayed(
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    dead_letter_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await trio.Path(dead_letter_dir).mkdir()
    letter, record = letter_files(dead_letter_dir, "old-origin")
    letter.write_bytes(b'{"jobId":"old-origin","success":true,"duration":"0s"}')
    record.write_text(json.dumps({"callbackUrl": receiver.url + "/x", "task": "greet"}))
    async with serving(make_server, receiver, callback_allowlist=["http://127.0.0.1:9"]):
        await trio.sleep(1000)
    assert receiver.received == []
    assert letter.exists() and record.exists()
    assert "callback URL no longer allowed" in caplog.text


async def test_a_job_started_at_once_is_not_replayed_beside_its_own_delivery(
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    list_letters = DeadLetterDir.pending

    def slow_listing(self: DeadLetterDir) -> list[DeadLetter]:
        # A busy disk: were the directory listed only once serving began, the first
        # job's letter would be written by now, and replayed beside its own delivery.
        time.sleep(0.3)
        return list_letters(self)

    monkeypatch.setattr(DeadLetterDir, "pending", slow_listing)
    receiver.answer(Answer(500))
    async with serving(make_server, receiver) as (_, client):
        await start(client, receiver, "greet", "early")
        await stored_result(client, "early")
        await trio.sleep(1000)
    # One failed attempt and one delivered, both by the job: no replayed copy.
    assert [json.loads(d.body)["jobId"] for d in receiver.received] == ["early", "early"]
    assert gaps(receiver.received) == [1.0]


async def test_a_corrupt_callback_record_does_not_break_the_server(
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    dead_letter_dir: Path,
) -> None:
    await trio.Path(dead_letter_dir).mkdir()
    for job_id, record_text in [
        ("number-url", '{"callbackUrl": 42, "task": "greet"}'),
        ("list-record", "[1, 2]"),
        ("bad-json", "{"),
        ("bad-url", '{"callbackUrl": "http://[::1", "task": "greet"}'),
    ]:
        letter, record = letter_files(dead_letter_dir, job_id)
        letter.write_bytes(b'{"jobId":"%s","success":true,"duration":"0s"}' % job_id.encode())
        record.write_text(record_text)
    async with serving(make_server, receiver, callback_retries=2) as (_, client):
        await trio.sleep(100)
        await start(client, receiver, "greet", "still-works")
        await receiver.wait_for(1)
    assert [json.loads(d.body)["jobId"] for d in receiver.received] == ["still-works"]
    assert len(os.listdir(dead_letter_dir)) == 8


# -- draining ---------------------------------------------------------------------


async def test_draining_cuts_a_retry_schedule_to_one_immediate_attempt(
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    dead_letter_dir: Path,
) -> None:
    receiver.default = Answer(500)
    async with serving(make_server, receiver) as (running, client):
        await start(client, receiver, "greet", "cut-short")
        await receiver.wait_for(1)
        await trio.sleep(0.5)
        running.request_shutdown()
        await receiver.wait_for(2)
    await trio.sleep(1000)
    assert gaps(receiver.received) == [0.5]
    assert (dead_letter_dir / "cut-short.json").exists()


async def test_shutdown_cancels_jobs_flushes_results_and_answers_503_while_draining(
    virtual_clock: trio.testing.MockClock,
    make_server: Callable[..., ft.Server],
    receiver: ScriptedReceiver,
    dead_letter_dir: Path,
) -> None:
    receiver.default = Answer(500)  # so every flushed result stays on disk to be read
    async with serving(make_server, receiver, shutdown_timeout=5) as (running, client):
        await start(client, receiver, "sleeper", "polite")
        await start(client, receiver, "stubborn", "stuck", params={"hold": 30})
        await trio.sleep(1)
        shutdown_at = trio.current_time()
        running.request_shutdown()
        [cancelled] = await receiver.wait_for(1)
        run = await client.post("/run/greet", json={})
        readyz = await client.get("/readyz")
        events = await client.get("/events")
        health = (await client.get("/health")).json()
        stop = await client.post("/stop/greet")
        result = await client.get("/result/polite")
        _, given_up = await receiver.wait_for(2)
    assert run.status_code == 503 and run.json() == {"error": "Server is shutting down"}
    assert readyz.status_code == 503 and readyz.json() == {"error": "server is shutting down"}
    assert events.status_code == 503
    assert health["status"] == "draining"
    assert stop.status_code == 200 and result.status_code == 200
    # The job that honoured cancellation: flushed at once, one attempt only.
    assert cancelled.at == pytest.approx(shutdown_at, abs=0.01)
    assert json.loads(cancelled.body)["error"] == {
        "code": "cancelled",
        "message": "server is shutting down",
        "step": "sleeping",
    }
    # The one that ignored it: worker_shutdown after the shutdown timeout, one attempt.
    assert given_up.at - shutdown_at == pytest.approx(5.0, abs=0.01)
    document = json.loads(given_up.body)
    assert document["jobId"] == "stuck" and document["success"] is False
    assert document["error"] == {
        "code": "worker_shutdown",
        "message": "server is shutting down",
        "step": "holding on",
    }
    assert len(receiver.received) == 2
    assert (dead_letter_dir / "polite.json").read_bytes() == cancelled.body
    assert (dead_letter_dir / "stuck.json").read_bytes() == given_up.body
