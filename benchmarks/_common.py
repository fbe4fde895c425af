"""What every benchmark shares: its arguments, the server under test, CPU pinning, figures.

A benchmark measures either a server it starts itself (a subprocess on a
free loopback port, pinned to `SERVER_CORE`) or the one named by ``--url``
and ``--token`` (any server speaking the funtask protocol). Its own load runs
on `LOAD_CORE`, so that on a 2-core machine server and load never share a
core. Figures print as ``name value unit [goal<op><x> met|MISSED]``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVER_CORE = 0
LOAD_CORE = 1
BENCH_TOKEN = "bench-token"
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
LISTENING = re.compile(rb"listening on (http://\S+)")


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: --url, --token, --pid, --quick."""
    arguments = argparse.ArgumentParser(description=description)
    arguments.add_argument(
        "--url",
        help="a running server speaking the funtask protocol (loopback only); default: start ours",
    )
    arguments.add_argument(
        "--token", default=os.environ.get("FUNTASK_AUTH_TOKEN"), help="its bearer token"
    )
    arguments.add_argument(
        "--pid", type=int, help="the --url server's process id, to read its memory (RSS)"
    )
    arguments.add_argument(
        "--quick", action="store_true", help="small sizes, to check the benchmark itself"
    )
    return arguments


def parse_args(arguments: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = arguments.parse_args(argv)
    if args.url:
        args.url = args.url.rstrip("/")
        if not args.token:
            arguments.error("--url needs --token (or FUNTASK_AUTH_TOKEN)")
        host = urlsplit(args.url).hostname or ""
        if urlsplit(args.url).scheme != "http" or not is_loopback(host):
            arguments.error("--url must be http:// on a loopback address: loads stay local")
    return args


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- figures -------------------------------------------------------------------


def format_value(value: float) -> str:
    if value != value:  # NaN: not measured
        return "nan"
    if abs(value) >= 100 or value == int(value):
        return str(round(value))
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def figure(
    name: str,
    value: float,
    unit: str,
    *,
    at_least: float | None = None,
    at_most: float | None = None,
) -> None:
    """Print one figure line, with its goal and whether it is met when it has one."""
    line = f"{name} {format_value(value)} {unit}"
    if at_least is not None:
        line += f" goal>={format_value(at_least)}"
        met = value >= at_least
    elif at_most is not None:
        line += f" goal<={format_value(at_most)}"
        met = value <= at_most
    if at_least is not None or at_most is not None:
        if value != value:  # NaN: not measured here (no --pid for a --url server)
            line += " n/a"
        else:
            line += " met" if met else " MISSED"
    print(line, flush=True)


def note(text: str) -> None:
    """A comment line: context for the figures, never parsed."""
    print(f"# {text}", flush=True)


# -- CPU pinning -----------------------------------------------------------------


def can_pin() -> bool:
    return (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")


def pinned(argv: list[str], core: int) -> list[str]:
    """`argv` run on `core` alone, through taskset when it exists."""
    if can_pin() and shutil.which("taskset"):
        return ["taskset", "-c", str(core), *argv]
    return argv


def pin_self(core: int = LOAD_CORE) -> None:
    """Run this process (the load side) on `core` alone."""
    if can_pin():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {core})


# -- servers under test --------------------------------------------------------------


@dataclasses.dataclass
class Target:
    """A server to measure: where it is, its token, and its process when known."""

    url: str
    token: str
    pid: int | None
    ours: bool

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def rss_mb(pid: int | None) -> float:
    """Resident memory of `pid` in MB (10^6 bytes), NaN when unknown."""
    if pid is None:
        return float("nan")
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) * 1024 / 1e6 if match else float("nan")


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) `pid` has used so far, NaN when unknown.

    Other processes on the machine slow a server down but do not add to its
    CPU time, so CPU time per request is the steadiest measure of cost.
    """
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def server_process(argv: list[str], env: Mapping[str, str] | None = None) -> Iterator[Target]:
    """Run `argv` (which prints ``listening on URL``) pinned to `SERVER_CORE`; stop it after."""
    with tempfile.TemporaryDirectory(prefix="funtask-bench-") as scratch:
        log_path = Path(scratch) / "server.log"
        full_env = {
            **os.environ,
            "FUNTASK_AUTH_TOKEN": BENCH_TOKEN,
            "FUNTASK_DEAD_LETTER_DIR": str(Path(scratch) / "dead-letters"),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                pinned(argv, SERVER_CORE),
                cwd=REPO_ROOT,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            url = _wait_listening(process, log_path)
            yield Target(url, BENCH_TOKEN, process.pid, ours=True)
        finally:
            _stop(process, log_path)


def _wait_listening(process: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        match = LISTENING.search(log_path.read_bytes())
        if match:
            return match.group(1).decode()
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"server did not start:\n{log_path.read_text(errors='replace')[-3000:]}")


def _stop(process: subprocess.Popen[bytes], log_path: Path) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            note("server needed SIGKILL to stop")
    problems = [
        line
        for line in log_path.read_text(errors="replace").splitlines()
        if " ERROR " in line or "Traceback" in line
    ]
    if problems:
        note(f"server log has {len(problems)} error line(s); first: {problems[0][:200]}")


@contextlib.contextmanager
def funtask_server(tasks: int = 16, env: Mapping[str, str] | None = None) -> Iterator[Target]:
    """Our benchmark server (`benchmarks.app`) as users serve it: ``funtask-trio serve``."""
    with server_process(
        [sys.executable, "-m", "funtask_trio", "serve", "benchmarks.app:server", "--port", "0"],
        {"FUNTASK_BENCH_TASKS": str(tasks), **(env or {})},
    ) as ours:
        yield ours


@contextlib.contextmanager
def target(
    args: argparse.Namespace, *, tasks: int = 16, env: Mapping[str, str] | None = None
) -> Iterator[Target]:
    """The server named by ``--url``, or our own started for the length of the block."""
    if args.url:
        yield Target(args.url, args.token, args.pid, ours=False)
        return
    with funtask_server(tasks, env) as ours:
        yield ours


def describe(target: Target) -> str:
    if not target.ours:
        where = f"the --url server (pin it yourself: taskset -c {SERVER_CORE} ...)"
    else:
        where = "our benchmarks.app via funtask-trio serve"
        if can_pin():
            where += f", server on CPU {SERVER_CORE}"
    if can_pin():
        where += f", load on CPU {LOAD_CORE}"
    return f"target {target.url} ({where})"
