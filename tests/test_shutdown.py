"""Graceful shutdown of real server processes: SIGTERM under server.run() and hypercorn's CLI.

Each test writes a small app module into its tmp_path, starts it as a
subprocess in a session of its own, and receives its callbacks on a real
local receiver. Signals are SIGTERM: background processes ignore SIGINT.
Every wait is bounded; a process left running is killed with its group.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from _receiver import Answer, Received, ScriptedReceiver, serve_receiver

pytestmark = pytest.mark.slow

TOKEN = "shutdown-token"
HYPERCORN = str(Path(sys.executable).with_name("hypercorn"))
WATCHDOG_MARGIN_S = 5.0  # funtask_trio._server.WATCHDOG_MARGIN_S
EXIT_SLACK_S = 1.5  # process teardown on a loaded machine
LAUNCHES = itertools.count()

APP_MODULE = '''
import os

import trio

import funtask_trio as ft

server = ft.Server(
    "shutdown-test",
    auth_token="shutdown-token",
    dead_letter_dir=os.environ["SHUTDOWN_TEST_DEAD_LETTERS"],
    shutdown_timeout=float(os.environ["SHUTDOWN_TEST_TIMEOUT"]),
    callback_allowlist=[os.environ["SHUTDOWN_TEST_RECEIVER"]],
    callback_timeout=float(os.environ["SHUTDOWN_TEST_CALLBACK_TIMEOUT"]),
)


@server.task
async def greet(run, params):
    return ft.ok("Hello!")


@server.task
async def polite(run, params):
    """Honours cancellation, like any Trio code."""
    await run.step("waiting politely")
    await trio.sleep_forever()


@server.task
async def stubborn(run, params):
    """Ignores cancellation for `hold` seconds."""
    await run.step("holding on")
    with trio.CancelScope(shield=True):
        await trio.sleep(params.float("hold"))
    return ft.ok("held")


@server.task
async def chatty(run, params):
    """Reports 100 kB steps as fast as it can: every SSE frame is big."""
    filler = "x" * 100_000
    count = 0
    while True:
        count += 1
        await run.step("%d %s", count, filler)
        await trio.sleep(0.01)


def _register_fleet():
    """Many tasks, so that many jobs run at once (one job per task)."""

    async def busy(run, params):
        await run.step("busy")
        if params.bool("stubborn", default=False):
            with trio.CancelScope(shield=True):
                await trio.sleep(params.float("hold"))
            return ft.ok("held")
        await trio.sleep_forever()

    async def quick(run, params):
        return ft.ok("done").with_data(n=params.int("n"))

    for index in range(100):
        server.task(f"busy-{index}")(busy)
        server.task(f"quick-{index}")(quick)


_register_fleet()


if __name__ == "__main__":
    server.run(port=0)
'''


@dataclasses.dataclass
class ServerProcess:
    process: trio.Process
    url: str
    log: Path
    dead_letters: Path

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def exit_code(self, *, within: float) -> int:
        with trio.fail_after(within):
            return await self.process.wait()


@pytest.fixture
async def receiver(nursery: trio.Nursery) -> ScriptedReceiver:
    receiver = ScriptedReceiver()
    await nursery.start(serve_receiver, receiver)
    return receiver


@contextlib.asynccontextmanager
async def launched(
    tmp_path: Path,
    launcher: str,
    *,
    receiver_url: str,
    shutdown_timeout: float,
    callback_timeout: float = 2,
) -> AsyncIterator[ServerProcess]:
    """The app served by `launcher` ("server.run" or "hypercorn"), until the block ends."""
    (tmp_path / "shutdown_app.py").write_text(APP_MODULE)
    dead_letters = tmp_path / "dead-letters"
    env = {key: value for key, value in os.environ.items() if not key.startswith("FUNTASK_")}
    env.update(
        SHUTDOWN_TEST_DEAD_LETTERS=str(dead_letters),
        SHUTDOWN_TEST_TIMEOUT=str(shutdown_timeout),
        SHUTDOWN_TEST_RECEIVER=receiver_url,
        SHUTDOWN_TEST_CALLBACK_TIMEOUT=str(callback_timeout),
        PYTHONUNBUFFERED="1",
    )
    if launcher == "server.run":
        argv = [sys.executable, "shutdown_app.py"]
    else:
        argv = [HYPERCORN, "--worker-class", "trio", "--bind", "127.0.0.1:0", "shutdown_app:server"]
    log = tmp_path / f"server-{next(LAUNCHES)}.log"
    with log.open("wb") as output:
        process = await trio.lowlevel.open_process(
            argv,
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: hypercorn's worker goes with it
        )
    try:
        with trio.fail_after(20):
            while not (
                match := re.search(r"Running on (http://127\.0\.0\.1:\d+)", log.read_text())
            ):
                assert process.poll() is None, f"server exited early:\n{log.read_text()}"
                await trio.sleep(0.05)
        yield ServerProcess(process, match.group(1), log, dead_letters)
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            with trio.move_on_after(5):
                await process.wait()


async def until(check: Callable[[], Awaitable[bool]], *, within: float = 5) -> None:
    with trio.fail_after(within):
        while not await check():
            await trio.sleep(0.02)


async def start(
    client: httpx.AsyncClient, receiver: ScriptedReceiver, task: str, job_id: str, **params: Any
) -> None:
    response = await client.post(
        f"/run/{task}",
        json={"jobId": job_id, "callbackUrl": receiver.url + "/hook", "params": params},
    )
    assert response.status_code == 202, response.text


async def running_steps(client: httpx.AsyncClient, **expected: str) -> None:
    """Wait until each task in `expected` is running a job at that step."""

    async def check() -> bool:
        tasks = (await client.get("/health")).json()["tasks"]
        return all(
            tasks[task].get("currentJob", {}).get("currentStep") == step
            for task, step in expected.items()
        )

    await until(check)


def by_job(received: list[Received]) -> dict[str, dict[str, Any]]:
    return {json.loads(item.body)["jobId"]: json.loads(item.body) for item in received}


# -- server.run(): the full PROTOCOL sequence ----------------------------------------


async def test_sigterm_under_server_run_drains_in_protocol_order_and_exits_0(
    tmp_path: Path, receiver: ScriptedReceiver
) -> None:
    shutdown_timeout = 2.0
    async with (
        launched(
            tmp_path, "server.run", receiver_url=receiver.url, shutdown_timeout=shutdown_timeout
        ) as served,
        served.client() as client,
    ):
        await start(client, receiver, "polite", "p1")
        await start(client, receiver, "stubborn", "s1", hold=4)
        await running_steps(client, polite="waiting politely", stubborn="holding on")
        signalled = trio.current_time()
        served.process.send_signal(signal.SIGTERM)

        # 1. Draining, visible to new clients while the stubborn job holds on.
        async def draining() -> bool:
            status: str = (await client.get("/health")).json()["status"]
            return status == "draining"

        await until(draining, within=2)
        run = await client.post("/run/greet", json={})
        readyz = await client.get("/readyz")
        events = await client.get("/events")
        stop = await client.post("/stop/greet")
        # 2. Jobs cancelled: the polite one's result is flushed at once, in one attempt.
        [cancelled] = await receiver.wait_for(1, timeout=5)

        async def stored() -> bool:  # once delivery has ended, /result keeps working
            return (await client.get("/result/p1")).status_code == 200

        await until(stored, within=2)
        result = await client.get("/result/p1")
        # 3-4. The stubborn one is given up on after the shutdown timeout.
        _, given_up = await receiver.wait_for(2, timeout=5)
        # 5. Exit, once the shielded sleep lets Trio finish.
        code = await served.exit_code(within=shutdown_timeout + WATCHDOG_MARGIN_S)
        exited = trio.current_time()
    assert run.status_code == 503 and run.content == b'{"error":"Server is shutting down"}\n'
    assert readyz.status_code == 503
    assert readyz.content == b'{"error":"server is shutting down"}\n'
    assert events.status_code == 503
    assert stop.json() == {"task": "greet", "message": "No running job"}
    assert cancelled.at - signalled < 1.0
    assert json.loads(cancelled.body)["error"] == {
        "code": "cancelled",
        "message": "server is shutting down",
        "step": "waiting politely",
    }
    assert result.status_code == 200 and result.content == cancelled.body + b"\n"
    assert shutdown_timeout - 0.2 < given_up.at - signalled < shutdown_timeout + 1.5
    assert json.loads(given_up.body) == {
        "jobId": "s1",
        "success": False,
        "duration": json.loads(given_up.body)["duration"],
        "error": {
            "code": "worker_shutdown",
            "message": "server is shutting down",
            "step": "holding on",
        },
    }
    assert len(receiver.received) == 2
    assert code == 0
    assert exited - signalled < shutdown_timeout + WATCHDOG_MARGIN_S
    assert os.listdir(served.dead_letters) == []
    assert "drained after the shutdown timeout" in served.log.read_text()


async def test_a_job_that_never_yields_cannot_hold_a_server_run_process(
    tmp_path: Path, receiver: ScriptedReceiver
) -> None:
    shutdown_timeout = 1.0
    async with (
        launched(
            tmp_path, "server.run", receiver_url=receiver.url, shutdown_timeout=shutdown_timeout
        ) as served,
        served.client() as client,
    ):
        await start(client, receiver, "stubborn", "forever", hold=3600)
        await running_steps(client, stubborn="holding on")
        signalled = trio.current_time()
        served.process.send_signal(signal.SIGTERM)
        [given_up] = await receiver.wait_for(1, timeout=5)
        code = await served.exit_code(
            within=shutdown_timeout + WATCHDOG_MARGIN_S + EXIT_SLACK_S + 2
        )
        exited = trio.current_time()
    assert json.loads(given_up.body)["error"]["code"] == "worker_shutdown"
    assert exited - signalled < shutdown_timeout + WATCHDOG_MARGIN_S + EXIT_SLACK_S
    # The drain gave up on a job, so not a clean one: the exit watchdog ends the process.
    assert code == 1
    assert "shutdown still blocked" in served.log.read_text()


# -- hypercorn's CLI: no 503s for new clients, but jobs cancelled and results flushed ---


async def test_sigterm_under_hypercorn_cli_flushes_results_and_exits_in_time(
    tmp_path: Path, receiver: ScriptedReceiver
) -> None:
    shutdown_timeout = 1.0
    async with (
        launched(
            tmp_path, "hypercorn", receiver_url=receiver.url, shutdown_timeout=shutdown_timeout
        ) as served,
        served.client() as client,
    ):
        await start(client, receiver, "polite", "p1")
        await start(client, receiver, "stubborn", "s1", hold=3)
        await running_steps(client, polite="waiting politely", stubborn="holding on")
        signalled = trio.current_time()
        served.process.send_signal(signal.SIGTERM)  # the supervisor, as a container runtime does
        received = await receiver.wait_for(2, timeout=5)
        code = await served.exit_code(within=shutdown_timeout + WATCHDOG_MARGIN_S + 2)
        exited = trio.current_time()
    results = by_job(received)
    assert results["p1"]["error"]["code"] == "cancelled"
    assert results["p1"]["error"]["message"] == "server is shutting down"
    assert results["s1"]["error"] == {
        "code": "worker_shutdown",
        "message": "server is shutting down",
        "step": "holding on",
    }
    cancelled_at = next(item.at for item in received if b'"p1"' in item.body)
    assert cancelled_at - signalled < 1.0
    assert code == 0
    assert exited - signalled < shutdown_timeout + WATCHDOG_MARGIN_S
    assert os.listdir(served.dead_letters) == []


async def test_sigterm_to_the_whole_process_group_under_hypercorn_cli_still_drains(
    tmp_path: Path, receiver: ScriptedReceiver
) -> None:
    # systemd's default KillMode=control-group signals every process of the service at once.
    shutdown_timeout = 1.0
    async with (
        launched(
            tmp_path, "hypercorn", receiver_url=receiver.url, shutdown_timeout=shutdown_timeout
        ) as served,
        served.client() as client,
    ):
        await start(client, receiver, "polite", "p1")
        await running_steps(client, polite="waiting politely")
        os.killpg(served.process.pid, signal.SIGTERM)
        with contextlib.suppress(trio.TooSlowError):
            await served.exit_code(within=shutdown_timeout + WATCHDOG_MARGIN_S + 2)
        letters = sorted(os.listdir(served.dead_letters))
    results = by_job(receiver.received)
    assert "p1" in results, f"result lost; dead letters on disk: {letters}"
    assert results["p1"]["error"]["code"] == "cancelled"


# -- a client that stops reading -------------------------------------------------------


@pytest.mark.parametrize("launcher", ["server.run", "hypercorn"])
async def test_an_event_stream_that_is_never_read_cannot_hold_the_process(
    launcher: str, tmp_path: Path, receiver: ScriptedReceiver
) -> None:
    shutdown_timeout = 1.0
    async with (
        launched(
            tmp_path, launcher, receiver_url=receiver.url, shutdown_timeout=shutdown_timeout
        ) as served,
        served.client() as client,
    ):
        await start(client, receiver, "chatty", "c1")
        host, port = served.url.removeprefix("http://").split(":")
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window, soon full
        try:
            stuck.connect((host, int(port)))
            stuck.sendall(f"GET /events?token={TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await trio.sleep(1)  # 100 kB frames fill every buffer between us
            signalled = trio.current_time()
            served.process.send_signal(signal.SIGTERM)
            code = await served.exit_code(
                within=shutdown_timeout + WATCHDOG_MARGIN_S + EXIT_SLACK_S + 2
            )
            exited = trio.current_time()
        finally:
            stuck.close()
        [flushed] = await receiver.wait_for(1, timeout=1)
    assert exited - signalled < shutdown_timeout + WATCHDOG_MARGIN_S + EXIT_SLACK_S
    assert json.loads(flushed.body)["error"]["code"] == "cancelled"
    if launcher == "server.run":
        # serve() owns the listening socket: TCP_USER_TIMEOUT breaks the stuck connection,
        # so the drain ends cleanly instead of by the watchdog.
        assert code == 0
        assert "shutdown still blocked" not in served.log.read_text()


async def test_a_receiver_that_never_answers_cannot_hold_the_process(
    tmp_path: Path, receiver: ScriptedReceiver
) -> None:
    receiver.default = Answer(hang=True)
    shutdown_timeout = 1.0
    async with (
        launched(
            tmp_path,
            "server.run",
            receiver_url=receiver.url,
            shutdown_timeout=shutdown_timeout,
            callback_timeout=60,  # far past the shutdown timeout
        ) as served,
        served.client() as client,
    ):
        await start(client, receiver, "polite", "p1")
        await running_steps(client, polite="waiting politely")
        signalled = trio.current_time()
        served.process.send_signal(signal.SIGTERM)
        await receiver.wait_for(1, timeout=5)  # the last attempt, which is never answered
        code = await served.exit_code(within=shutdown_timeout + WATCHDOG_MARGIN_S + 2)
        exited = trio.current_time()
    # The delivery is cut at the shutdown timeout; the dead letter stays for the next start.
    assert exited - signalled < shutdown_timeout + EXIT_SLACK_S
    assert code == 0
    letter = served.dead_letters / "p1.json"
    assert letter.read_bytes() == receiver.received[0].body
    assert len(receiver.received) == 1


# -- at-least-once across a crash -----------------------------------------------------------


async def test_a_result_survives_kill_9_between_its_dead_letter_and_its_delivery(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    # The receiver's port is bound but not yet listening: every delivery is refused.
    receiver_socket = socket.socket()
    receiver_socket.bind(("127.0.0.1", 0))
    receiver_url = f"http://127.0.0.1:{receiver_socket.getsockname()[1]}"
    async with (
        launched(tmp_path, "server.run", receiver_url=receiver_url, shutdown_timeout=1) as served,
        served.client() as client,
    ):
        response = await client.post(
            "/run/greet", json={"jobId": "crash-1", "callbackUrl": receiver_url + "/hook"}
        )
        assert response.status_code == 202
        letter = served.dead_letters / "crash-1.json"
        record = served.dead_letters / "crash-1.callback"

        async def written() -> bool:
            return letter.exists() and record.exists()

        await until(written)
        served.process.send_signal(signal.SIGKILL)
        assert await served.exit_code(within=5) == -signal.SIGKILL
    body = letter.read_bytes()
    assert json.loads(body)["jobId"] == "crash-1" and json.loads(body)["success"] is True
    assert stat.S_IMODE(letter.stat().st_mode) == 0o600
    assert stat.S_IMODE(record.stat().st_mode) == 0o600

    receiver = ScriptedReceiver()
    receiver_socket.listen()
    await nursery.start(serve_receiver, receiver, receiver_socket)
    async with launched(
        tmp_path, "server.run", receiver_url=receiver_url, shutdown_timeout=1
    ) as restarted:
        [delivered] = await receiver.wait_for(1, timeout=10)

        async def removed() -> bool:
            return not letter.exists() and not record.exists()

        await until(removed)
        restarted.process.send_signal(signal.SIGTERM)
        assert await restarted.exit_code(within=5) == 0
    receiver_socket.close()
    assert delivered.path == "/hook"
    assert delivered.body == body
    assert delivered.headers["content-type"] == "application/json"
    assert len(receiver.received) == 1


async def test_sigterm_with_50_jobs_across_tasks_gives_every_job_a_result_in_time(
    tmp_path: Path, receiver: ScriptedReceiver
) -> None:
    shutdown_timeout = 2.0
    async with (
        launched(
            tmp_path, "server.run", receiver_url=receiver.url, shutdown_timeout=shutdown_timeout
        ) as served,
        served.client() as client,
    ):
        for index in range(50):
            stubborn = index % 5 == 0  # 10 of them ignore cancellation past the timeout
            params = {"stubborn": True, "hold": 30} if stubborn else {}
            await start(client, receiver, f"busy-{index}", f"job-{index}", **params)
        await running_steps(client, **{f"busy-{index}": "busy" for index in range(50)})
        signalled = trio.current_time()
        served.process.send_signal(signal.SIGTERM)
        received = await receiver.wait_for(50, timeout=shutdown_timeout + 5)
        last_result = max(item.at for item in received)
        code = await served.exit_code(within=shutdown_timeout + WATCHDOG_MARGIN_S + 3)
    results = by_job(received)
    assert sorted(results) == sorted(f"job-{index}" for index in range(50))
    codes = {job_id: result["error"]["code"] for job_id, result in results.items()}
    assert {codes[f"job-{index}"] for index in range(50) if index % 5} == {"cancelled"}
    assert {codes[f"job-{index}"] for index in range(0, 50, 5)} == {"worker_shutdown"}
    assert all(result["error"]["step"] == "busy" for result in results.values())
    assert last_result - signalled < shutdown_timeout + 1.5
    # Ten jobs would not stop: the watchdog ends the process after flushing their results.
    assert code == 1
    assert os.listdir(served.dead_letters) == []


async def test_kill_9_with_100_undelivered_results_loses_none_after_restart(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    receiver_socket = socket.socket()  # bound, not listening: deliveries are refused
    receiver_socket.bind(("127.0.0.1", 0))
    receiver_url = f"http://127.0.0.1:{receiver_socket.getsockname()[1]}"
    async with (
        launched(tmp_path, "server.run", receiver_url=receiver_url, shutdown_timeout=1) as served,
        served.client() as client,
    ):
        for index in range(100):
            response = await client.post(
                f"/run/quick-{index}",
                json={
                    "jobId": f"q-{index}",
                    "callbackUrl": receiver_url + "/hook",
                    "params": {"n": index},
                },
            )
            assert response.status_code == 202

        async def all_written() -> bool:
            return len(list(served.dead_letters.glob("q-*.json"))) == 100

        await until(all_written, within=20)
        os.killpg(served.process.pid, signal.SIGKILL)
        assert await served.exit_code(within=5) == -signal.SIGKILL

    receiver = ScriptedReceiver()
    receiver_socket.listen()
    await nursery.start(serve_receiver, receiver, receiver_socket)
    async with launched(
        tmp_path, "server.run", receiver_url=receiver_url, shutdown_timeout=1
    ) as restarted:
        await receiver.wait_for(100, timeout=30)

        async def emptied() -> bool:
            return os.listdir(restarted.dead_letters) == []

        await until(emptied, within=10)
        restarted.process.send_signal(signal.SIGTERM)
        assert await restarted.exit_code(within=5) == 0
    receiver_socket.close()
    delivered = by_job(receiver.received)
    assert sorted(delivered) == sorted(f"q-{index}" for index in range(100))
    assert all(result["data"]["n"] == int(job_id[2:]) for job_id, result in delivered.items())
