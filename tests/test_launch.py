"""Launching the example: through hypercorn's CLI and through server.run()."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
HYPERCORN = str(Path(sys.executable).with_name("hypercorn"))

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(tmp_path: Path, token: str | None = "launch-token") -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FUNTASK_")}
    env["FUNTASK_DEAD_LETTER_DIR"] = str(tmp_path / "dead-letters")
    if token is not None:
        env["FUNTASK_AUTH_TOKEN"] = token
    return env


def wait_until_serving(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited early"
        try:
            if httpx.get(f"{url}/livez", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("server did not start")


@pytest.mark.parametrize("launcher", ["hypercorn", "server.run"])
def test_example_serves_greet_and_exits_cleanly_on_sigterm(tmp_path, launcher):
    port = free_port()
    if launcher == "hypercorn":
        command = [
            HYPERCORN,
            "--worker-class",
            "trio",
            "--bind",
            f"127.0.0.1:{port}",
            "examples.counter:server",
        ]
    else:
        command = [
            sys.executable,
            "-c",
            f"from examples.counter import server; server.run(port={port})",
        ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, process)
        response = httpx.post(
            f"{url}/run/greet",
            headers={"Authorization": "Bearer launch-token"},
            content=b'{"params":{"name":"World"}}',
        )
        assert response.json()["message"] == "Hello, World!"
        assert response.json()["success"] is True
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_hypercorn_exits_non_zero_with_the_config_error(tmp_path):
    completed = subprocess.run(
        [
            HYPERCORN,
            "--worker-class",
            "trio",
            "--bind",
            f"127.0.0.1:{free_port()}",
            "examples.counter:server",
        ],
        cwd=ROOT,
        env=environment(tmp_path, token=None),
        capture_output=True,
        timeout=30,
    )
    assert completed.returncode != 0
    assert b"no auth token (pass auth_token= or set FUNTASK_AUTH_TOKEN)" in completed.stderr
