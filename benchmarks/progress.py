"""Progress cost: ``await run.progress()`` calls per second inside a job, 0 and 100 subscribers.

The ``storm`` task calls ``run.progress(i, steps, "item %d", i)`` in a tight
loop. Per core means per second of the server's CPU time (from /proc: the
loop and whatever serving the subscribers takes from it), which other
processes on the machine do not disturb; the rate per second of the job's
own wall time is shown too. Best of a few storms. Goal: >= 200,000 calls
per CPU second with 100 subscribers.
"""

from __future__ import annotations

import sys

import trio

from ._common import describe, figure, note, parse_args, parser, pin_self, target
from ._storm import storms

GOAL_CALLS_PER_S = 200_000
SUBSCRIBERS = 100


def main(argv: list[str] | None = None) -> int:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--steps", type=int, help="progress calls per storm (default 200,000)")
    arguments.add_argument("--repeat", type=int, help="storms per case, best kept (default 3)")
    args = parse_args(arguments, argv)
    steps = args.steps or (20_000 if args.quick else 200_000)
    repeat = args.repeat or (1 if args.quick else 3)
    pin_self()
    with target(args) as where:
        note(describe(where))
        note(f"best of {repeat} storm(s) of {steps} progress calls")
        quiet = trio.run(storms, where, steps, 0, repeat)
        watched = trio.run(storms, where, steps, SUBSCRIBERS, repeat)
    if where.pid is None:
        note("no --pid: calls per CPU second not measured")
    figure("progress.calls_0_subscribers", max(r.calls_per_cpu_s for r in quiet), "calls/cpu-s")
    figure(
        f"progress.calls_{SUBSCRIBERS}_subscribers",
        max(r.calls_per_cpu_s for r in watched),
        "calls/cpu-s",
        at_least=GOAL_CALLS_PER_S,
    )
    figure("progress.calls_0_subscribers_wall", max(r.calls_per_s for r in quiet), "calls/s")
    figure(
        f"progress.calls_{SUBSCRIBERS}_subscribers_wall",
        max(r.calls_per_s for r in watched),
        "calls/s",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
