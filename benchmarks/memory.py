"""Memory: server RSS idle, after 10,000 sequential jobs, after 10,000 SSE connect/disconnects.

Jobs are sync runs of ``greet`` one after another on one connection (their
rate is reported too: Go's funtask does 6,100/s on one core). Each SSE
client connects to ``/events``, reads the first frame and hangs up; ten
clients take turns. RSS comes from /proc, so a ``--url`` server needs
``--pid``. Goals: idle <= 60 MB, growth over the 10,000 jobs <= 5 MB.
"""

from __future__ import annotations

import os
import sys
import time

import trio

from ._common import Target, describe, figure, note, parse_args, parser, pin_self, rss_mb, target
from ._http import Connection

GOAL_IDLE_MB = 60.0
GOAL_GROWTH_MB = 5.0
SSE_CLIENTS = 10
SETTLE_S = 1.0


async def sequential_jobs(where: Target, count: int) -> float:
    """Run greet `count` times, one after another; return the runs per second."""
    connection = await Connection.open(where.url)
    raw = connection.build(
        "POST",
        "/run/greet",
        b'{"params":{"name":"World"}}',
        {**where.auth, "Content-Type": "application/json"},
    )
    started = time.perf_counter()
    try:
        for _ in range(count):
            await connection.send(raw)
            status, headers = await connection.response_head()
            await connection.reader.body(headers)
            if status != 200:
                raise RuntimeError(f"/run/greet answered {status}")
            if headers.get("connection", "").lower() == "close":
                await connection.aclose()
                connection = await Connection.open(where.url)
    finally:
        await connection.aclose()
    return count / (time.perf_counter() - started)


async def sse_churn(where: Target, count: int) -> float:
    """Connect to /events, read the first frame, hang up: `count` times; return per second."""
    wanted = {**where.auth, "Accept": "text/event-stream"}

    async def client(turns: int) -> None:
        for _ in range(turns):
            connection = await Connection.open(where.url)
            try:
                await connection.send(connection.build("GET", "/events", headers=wanted))
                status, headers = await connection.response_head()
                if status != 200:
                    raise RuntimeError(f"/events answered {status}")
                async for chunk in connection.reader.body_chunks(headers):
                    if b"\n\n" in chunk:
                        break
            finally:
                await connection.aclose()

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for index in range(SSE_CLIENTS):
            nursery.start_soon(client, count // SSE_CLIENTS + (index < count % SSE_CLIENTS))
    return count / (time.perf_counter() - started)


def open_fds(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return float("nan")


def main(argv: list[str] | None = None) -> int:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--jobs", type=int, help="sequential jobs (default 10,000)")
    arguments.add_argument("--connects", type=int, help="SSE connect/disconnects (default 10,000)")
    args = parse_args(arguments, argv)
    jobs = args.jobs or (1_000 if args.quick else 10_000)
    connects = args.connects or (1_000 if args.quick else 10_000)
    pin_self()
    with target(args) as where:
        note(describe(where))
        if where.pid is None:
            note("no --pid: memory not measured, rates only")
        time.sleep(SETTLE_S)
        idle = rss_mb(where.pid)
        fds_idle = open_fds(where.pid)
        job_rate = trio.run(sequential_jobs, where, jobs)
        time.sleep(SETTLE_S)
        after_jobs = rss_mb(where.pid)
        connect_rate = trio.run(sse_churn, where, connects)
        time.sleep(SETTLE_S)
        after_sse = rss_mb(where.pid)
        fds_after = open_fds(where.pid)
    figure("memory.idle", idle, "MB", at_most=GOAL_IDLE_MB)
    figure("memory.after_jobs", after_jobs, "MB")
    figure("memory.growth_jobs", after_jobs - idle, "MB", at_most=GOAL_GROWTH_MB)
    figure("memory.after_sse_connects", after_sse, "MB")
    figure("memory.growth_sse", after_sse - after_jobs, "MB")
    figure("memory.open_fds_growth_sse", fds_after - fds_idle, "fds")
    figure("memory.sequential_runs", job_rate, "runs/s")
    figure("memory.sse_connects", connect_rate, "connects/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
