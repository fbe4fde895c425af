"""Overhead over the stack: sync runs of greet against a bare Quart-Trio route, same hypercorn.

(a) ``POST /greet`` on `benchmarks.app.bare_app`: the same JSON without
funtask. (b) ``POST /run/greet`` (sync) on the server under test: with 1
connection, with 16 connections on 16 tasks (``greet-0`` ... ``greet-15``),
and with 16 connections on the one task, where most answers are 409 (busy).
Only 200s count as runs. Both servers stay up and the runs alternate, round
after round, so that load from other processes hits both alike; each figure
is the best round (noise only ever slows a run down). The server's CPU time
per answer (from /proc) is shown too, with the same ratio taken from it
(bare CPU per request / CPU per run, 16 connections), which load from other
processes hardly moves. Goal: b/a >= 0.85.
"""

from __future__ import annotations

import contextlib
import json
import sys

import trio

from ._common import (
    Target,
    cpu_seconds,
    describe,
    figure,
    note,
    parse_args,
    parser,
    server_process,
    target,
)
from ._http import Connection
from ._load import LoadResult, loader, run_load

GOAL_RATIO = 0.85
BODY = json.dumps({"params": {"name": "World"}}).encode()
SPREAD = 16


def _can_spread(where: Target) -> bool:
    """Whether the server has the tasks greet-0 ... greet-15."""

    async def probe() -> int:
        connection = await Connection.open(where.url)
        try:
            response = await connection.post_json(f"/run/greet-{SPREAD - 1}", {}, where.auth)
        finally:
            await connection.aclose()
        return response.status

    return trio.run(probe) == 200


def _post_load(
    server: Target,
    auth: dict[str, str],
    path: str,
    connections: int,
    spread: int,
    seconds: float,
) -> LoadResult:
    return run_load(
        server.url,
        path,
        body=BODY,
        headers={**auth, "Content-Type": "application/json"},
        connections=connections,
        seconds=seconds,
        spread=spread,
    )


def main(argv: list[str] | None = None) -> int:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--seconds", type=float, help="seconds per load run (default 5)")
    arguments.add_argument("--rounds", type=int, help="rounds of all runs (default 4)")
    arguments.add_argument(
        "--bare-url", help="a running bare app (POST /greet) instead of starting ours"
    )
    args = parse_args(arguments, argv)
    seconds = args.seconds or (2 if args.quick else 5)
    rounds = args.rounds or (1 if args.quick else 4)

    with contextlib.ExitStack() as stack:
        if args.bare_url:
            bare = Target(args.bare_url.rstrip("/"), "", None, ours=False)
        else:
            bare = stack.enter_context(
                server_process([sys.executable, "-m", "benchmarks.app", "bare"])
            )
        where = stack.enter_context(target(args, tasks=SPREAD))
        note(f"load: {loader()}, closed loop, best of {rounds} round(s) of {seconds:g}s")
        note(f"(a) bare Quart-Trio route at {bare.url}/greet")
        note(f"(b) {describe(where)}")
        runs = [
            ("bare_c1", bare, "/greet", 1, 1),
            ("bare_c16", bare, "/greet", 16, 1),
            ("run_c1", where, "/run/greet", 1, 1),
            ("run_c16_one_task", where, "/run/greet", 16, 1),
        ]
        if _can_spread(where):
            runs.append(("run_c16", where, "/run/greet-{i}", 16, SPREAD))
        else:
            note(f"no task greet-{SPREAD - 1} on the server: 16 connections on 16 tasks skipped")
        best: dict[str, LoadResult] = {}
        cpu_us: dict[str, float] = {}  # server CPU per answer, least of the rounds
        for round_number in range(rounds):
            for name, server, path, connections, spread in runs:
                if round_number == 0:  # warm-up: connections, caches, the first jobs
                    _post_load(server, where.auth, path, connections, spread, 1)
                cpu_started = cpu_seconds(server.pid)
                result = _post_load(server, where.auth, path, connections, spread, seconds)
                answers = sum(result.statuses.values())
                cost_us = (cpu_seconds(server.pid) - cpu_started) / max(answers, 1) * 1e6
                if not cost_us >= cpu_us.get(name, float("inf")):
                    cpu_us[name] = cost_us
                other = {s: n for s, n in result.statuses.items() if s not in (200, 409)}
                if result.errors or other:
                    note(f"{name}: {result.errors} socket errors, other statuses {other}")
                if name not in best or result.rate(200) > best[name].rate(200):
                    best[name] = result

    figure("overhead.bare_c1", best["bare_c1"].rate(200), "req/s")
    figure("overhead.bare_c1_p99", best["bare_c1"].p99_ms, "ms")
    figure("overhead.bare_c16", best["bare_c16"].rate(200), "req/s")
    figure("overhead.run_c1", best["run_c1"].rate(200), "runs/s")
    figure("overhead.run_c1_p50", best["run_c1"].p50_ms, "ms")
    figure("overhead.run_c1_p99", best["run_c1"].p99_ms, "ms")
    if "run_c16" in best:
        figure("overhead.run_c16", best["run_c16"].rate(200), "runs/s")
        figure("overhead.run_c16_409", best["run_c16"].rate(409), "req/s")
        figure("overhead.run_c16_p99", best["run_c16"].p99_ms, "ms")
    figure("overhead.run_c16_one_task_200", best["run_c16_one_task"].rate(200), "runs/s")
    figure("overhead.run_c16_one_task_409", best["run_c16_one_task"].rate(409), "req/s")
    figure("overhead.bare_cpu_per_request", cpu_us["bare_c16"], "us")
    figure("overhead.run_cpu_per_run", cpu_us["run_c16" if "run_c16" in best else "run_c1"], "us")
    figure("overhead.run_c16_one_task_cpu_per_answer", cpu_us["run_c16_one_task"], "us")
    ratio_1 = best["run_c1"].rate(200) / best["bare_c1"].rate(200)
    figure("overhead.ratio_c1", ratio_1, "b/a", at_least=GOAL_RATIO)
    if "run_c16" in best:
        ratio_16 = best["run_c16"].rate(200) / best["bare_c16"].rate(200)
        figure("overhead.ratio_c16", ratio_16, "b/a", at_least=GOAL_RATIO)
        # The same comparison in server CPU per answer: steadier on a busy machine.
        cpu_ratio = cpu_us["bare_c16"] / cpu_us["run_c16"]
        figure("overhead.ratio_cpu", cpu_ratio, "a/b", at_least=GOAL_RATIO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
