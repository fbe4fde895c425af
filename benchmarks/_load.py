"""Closed-loop HTTP load: N keep-alive connections, each sending its next request on an answer.

wrk (with a Lua script counting statuses) when it is installed, else a Trio
load generator in a separate process; either way pinned to `LOAD_CORE`.
``FUNTASK_BENCH_LOADER=python`` forces the Trio one.

Run as ``python -m benchmarks._load ...`` it is that Trio generator: it
prints one JSON document with what it counted.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import trio

from ._common import LOAD_CORE, pin_self, pinned
from ._http import Connection, build_request

MAX_WRK_THREADS = 16
REQUEST_TIMEOUT_S = 10


@dataclasses.dataclass
class LoadResult:
    """What one load run counted."""

    tool: str
    seconds: float
    statuses: dict[int, int]
    errors: int
    p50_ms: float
    p99_ms: float

    def rate(self, status: int | None = None) -> float:
        """Answers per second, all or of one status."""
        count = sum(self.statuses.values()) if status is None else self.statuses.get(status, 0)
        return count / self.seconds if self.seconds > 0 else 0.0


def loader() -> str:
    if os.environ.get("FUNTASK_BENCH_LOADER", "") != "python" and shutil.which("wrk"):
        return "wrk"
    return "python"


def run_load(
    base_url: str,
    path_template: str,
    *,
    body: bytes,
    headers: Mapping[str, str],
    connections: int,
    seconds: float,
    spread: int = 1,
) -> LoadResult:
    """POST `body` to `path_template` (``{i}``: connection number mod `spread`) for `seconds`."""
    if loader() == "wrk":
        return _run_wrk(base_url, path_template, body, headers, connections, seconds, spread)
    argv = [
        sys.executable,
        "-m",
        "benchmarks._load",
        "--url",
        base_url,
        "--path",
        path_template,
        "--body",
        body.decode(),
        "--connections",
        str(connections),
        "--seconds",
        str(seconds),
        "--spread",
        str(spread),
    ]
    for name, value in headers.items():
        argv += ["--header", f"{name}: {value}"]
    completed = subprocess.run(
        pinned(argv, LOAD_CORE), capture_output=True, check=True, timeout=seconds + 60
    )
    counted = json.loads(completed.stdout)
    counted["statuses"] = {int(status): count for status, count in counted["statuses"].items()}
    return LoadResult(tool="python", **counted)


# -- wrk -----------------------------------------------------------------------------

WRK_SCRIPT = r"""
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  local path = string.gsub(PATH_TEMPLATE, "{i}", tostring(id % SPREAD))
  prepared = wrk.format("POST", path, HEADERS, BODY)
end

function request()
  return prepared
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      io.write(string.format("status %d %d\n", status, count))
    end
  end
  local e = summary.errors
  io.write(string.format("errors %d\n", e.connect + e.read + e.write + e.timeout))
  io.write(string.format("duration_us %d\n", summary.duration))
  io.write(string.format("p50_us %d\n", latency:percentile(50)))
  io.write(string.format("p99_us %d\n", latency:percentile(99)))
end
"""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal here


def _run_wrk(
    base_url: str,
    path_template: str,
    body: bytes,
    headers: Mapping[str, str],
    connections: int,
    seconds: float,
    spread: int,
) -> LoadResult:
    header_table = ", ".join(
        f"[{_lua_string(name)}] = {_lua_string(value)}" for name, value in headers.items()
    )
    prelude = (
        f"PATH_TEMPLATE = {_lua_string(path_template)}\n"
        f"SPREAD = {spread}\n"
        f"BODY = {_lua_string(body.decode())}\n"
        f"HEADERS = {{{header_table}}}\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(prelude + WRK_SCRIPT)
    try:
        threads = min(connections, MAX_WRK_THREADS)
        argv = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            f"--timeout={REQUEST_TIMEOUT_S}s",
            "-s",
            script.name,
            base_url,
        ]
        completed = subprocess.run(
            pinned(argv, LOAD_CORE), capture_output=True, text=True, timeout=seconds + 60
        )
    finally:
        Path(script.name).unlink()
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed: {completed.stderr or completed.stdout}")
    statuses: dict[int, int] = collections.Counter()
    values = {}
    for line in completed.stdout.splitlines():
        if match := re.fullmatch(r"status (\d+) (\d+)", line):
            statuses[int(match.group(1))] += int(match.group(2))
        elif match := re.fullmatch(r"(errors|duration_us|p50_us|p99_us) (\d+)", line):
            values[match.group(1)] = int(match.group(2))
    return LoadResult(
        tool="wrk",
        seconds=values["duration_us"] / 1e6,
        statuses=dict(statuses),
        errors=values["errors"],
        p50_ms=values["p50_us"] / 1000,
        p99_ms=values["p99_us"] / 1000,
    )


# -- the Trio generator ----------------------------------------------------------------


async def _hammer(
    base_url: str,
    raw: bytes,
    deadline: float,
    statuses: collections.Counter[int],
    latencies: list[float],
    errors: list[str],
) -> None:
    connection = await Connection.open(base_url)
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                with trio.fail_after(REQUEST_TIMEOUT_S):
                    await connection.send(raw)
                    status, headers = await connection.response_head()
                    await connection.reader.body(headers)
            except (ConnectionError, trio.BrokenResourceError, trio.TooSlowError) as error:
                errors.append(repr(error))
                await connection.aclose()
                connection = await Connection.open(base_url)
                continue
            latencies.append(time.perf_counter() - started)
            statuses[status] += 1
            if headers.get("connection", "").lower() == "close":
                # hypercorn closes a connection after keep_alive_max_requests (1000)
                await connection.aclose()
                connection = await Connection.open(base_url)
    finally:
        await connection.aclose()


async def _generate(args: argparse.Namespace) -> dict[str, object]:
    headers = dict(line.split(": ", 1) for line in args.header)
    host = urlsplit(args.url).netloc
    statuses: collections.Counter[int] = collections.Counter()
    latencies: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    deadline = started + args.seconds
    async with trio.open_nursery() as nursery:
        for index in range(args.connections):
            path = args.path.replace("{i}", str(index % args.spread))
            raw = build_request("POST", host, path, args.body.encode(), headers)
            nursery.start_soon(
                partial(_hammer, args.url, raw, deadline, statuses, latencies, errors)
            )
    latencies.sort()
    percentiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "seconds": time.perf_counter() - started,
        "statuses": dict(statuses),
        "errors": len(errors),
        "p50_ms": percentiles[49] * 1000,
        "p99_ms": percentiles[98] * 1000,
    }


def main() -> None:
    arguments = argparse.ArgumentParser(description="the Trio load generator")
    arguments.add_argument("--url", required=True)
    arguments.add_argument("--path", required=True)
    arguments.add_argument("--body", default="")
    arguments.add_argument("--header", action="append", default=[])
    arguments.add_argument("--connections", type=int, default=1)
    arguments.add_argument("--seconds", type=float, default=5)
    arguments.add_argument("--spread", type=int, default=1)
    args = arguments.parse_args()
    pin_self(LOAD_CORE)
    print(json.dumps(trio.run(_generate, args)))


if __name__ == "__main__":
    main()
