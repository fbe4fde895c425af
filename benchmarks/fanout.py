"""SSE fan-out: a 100,000-step progress storm with 0 and with 100 subscribers reading /events.

Figures: the storm's wall time (sync ``POST /run/storm``) in each case and
their ratio, the frames each subscriber got during the storm (the server
coalesces: at most one frame per 20 ms each), and the lag from the sync
answer until every subscriber holds the final snapshot (the storm job as
``lastJob``). The ratio is also given in server CPU time (from /proc),
steadier when other processes load the machine. Goals: ratio <= 3, lag <=
50 ms.
"""

from __future__ import annotations

import statistics
import sys

import trio

from ._common import describe, figure, note, parse_args, parser, pin_self, target
from ._storm import storms

GOAL_RATIO = 3.0
GOAL_LAG_MS = 50.0
SUBSCRIBERS = 100


def main(argv: list[str] | None = None) -> int:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--steps", type=int, help="steps in the storm (default 100,000)")
    arguments.add_argument("--repeat", type=int, help="storms per case, best kept (default 2)")
    args = parse_args(arguments, argv)
    steps = args.steps or (20_000 if args.quick else 100_000)
    repeat = args.repeat or (1 if args.quick else 2)
    pin_self()
    with target(args) as where:
        note(describe(where))
        note(f"best of {repeat} storm(s) of {steps} steps, {SUBSCRIBERS} subscribers")
        quiet_runs = trio.run(storms, where, steps, 0, repeat)
        watched_runs = trio.run(storms, where, steps, SUBSCRIBERS, repeat)
    quiet = min(quiet_runs, key=lambda r: r.wall_s)
    watched = min(watched_runs, key=lambda r: r.wall_s)
    if watched.missing_final:
        note(f"{watched.missing_final} subscriber(s) never got the final snapshot")
    figure("fanout.storm_0_subscribers", quiet.wall_s, "s")
    figure(f"fanout.storm_{SUBSCRIBERS}_subscribers", watched.wall_s, "s")
    figure("fanout.ratio", watched.wall_s / quiet.wall_s, "x", at_most=GOAL_RATIO)
    # The same in server CPU time, which other processes on the machine hardly move.
    quiet_cpu = min(r.cpu_s for r in quiet_runs)
    watched_cpu = min(r.cpu_s for r in watched_runs)
    figure(
        "fanout.ratio_cpu",
        watched_cpu / quiet_cpu if quiet_cpu > 0 else float("nan"),
        "x",
        at_most=GOAL_RATIO,
    )
    figure("fanout.frames_per_subscriber_mean", statistics.mean(watched.frames), "frames")
    figure("fanout.frames_per_subscriber_min", min(watched.frames), "frames")
    figure("fanout.frames_per_subscriber_max", max(watched.frames), "frames")
    lag_ms = watched.lag_s * 1000 if watched.lag_s is not None else float("nan")
    figure("fanout.final_snapshot_lag", lag_ms, "ms", at_most=GOAL_LAG_MS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
