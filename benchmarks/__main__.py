"""``python -m benchmarks`` (``make bench``): every benchmark in turn, then all figures together.

Each benchmark runs as its own process with its own server, so one failing
does not stop the others. ``--quick`` and ``--url``/``--token``/``--pid``
are passed on. ``--record`` also writes the figures, with a description of
the machine, into benchmarks/README.md; ``--record-from LOG`` does that from
the output of an earlier run instead of running again.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from ._load import loader

BENCHMARKS = ("overhead", "progress", "fanout", "memory", "callbacks")
README = Path(__file__).with_name("README.md")
FIGURE_LINE = re.compile(r"^[a-z0-9_.]+ \S+ \S+( goal\S+ (met|MISSED))?$")
START_MARK = "<!-- figures:start -->"
END_MARK = "<!-- figures:end -->"
TOTAL_LINE = re.compile(r"^# all benchmarks took (\S+) s")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    return (
        f"{os.cpu_count()} CPUs (nproc), {cpu_model()}, Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}"
    )


def run_one(name: str, passed: list[str]) -> tuple[list[str], bool]:
    """Run one benchmark, echoing its output; its figure lines and whether it exited 0."""
    print(f"## benchmarks.{name}", flush=True)
    process = subprocess.Popen(
        [sys.executable, "-m", f"benchmarks.{name}", *passed],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    figures = []
    for line in process.stdout:
        print(line, end="", flush=True)
        if FIGURE_LINE.match(line.rstrip("\n")):
            figures.append(line.rstrip("\n"))
    return figures, process.wait() == 0


def record(figures: list[str], seconds: float, quick: bool) -> None:
    """Replace the figures section of README.md."""
    when = datetime.date.today().isoformat()
    section = "\n".join(
        [
            START_MARK,
            f"Recorded {when} by `python -m benchmarks{' --quick' if quick else ''}`"
            f" in {seconds:.0f} s, load by {loader()}.",
            f"Machine: {machine()}.",
            "",
            "```",
            *figures,
            "```",
            END_MARK,
        ]
    )
    text = README.read_text()
    start, end = text.index(START_MARK), text.index(END_MARK) + len(END_MARK)
    README.write_text(text[:start] + section + text[end:])
    print(f"# figures written to {README}", flush=True)


def main() -> int:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--quick", action="store_true", help="small sizes")
    arguments.add_argument("--url", help="a running server (loopback) instead of ours")
    arguments.add_argument("--token", help="its bearer token")
    arguments.add_argument("--pid", help="its process id (memory figures)")
    arguments.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    arguments.add_argument("--record", action="store_true", help="write figures to README.md")
    arguments.add_argument("--record-from", metavar="LOG", help="record an earlier run's output")
    args = arguments.parse_args()

    if args.record_from:
        lines = Path(args.record_from).read_text().splitlines()
        figures = [line for line in lines if FIGURE_LINE.match(line)]
        totals = [float(m.group(1)) for line in lines if (m := TOTAL_LINE.match(line))]
        record(figures, totals[-1] if totals else float("nan"), quick=False)
        return 0

    passed = ["--quick"] if args.quick else []
    for option in ("url", "token", "pid"):
        if getattr(args, option):
            passed += [f"--{option}", getattr(args, option)]
    chosen = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        arguments.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    print(f"# {machine()}", flush=True)
    started = time.perf_counter()
    figures: list[str] = []
    failed = []
    for name in chosen:
        lines, ok = run_one(name, passed)
        figures += lines
        if not ok:
            failed.append(name)
    seconds = time.perf_counter() - started

    print("## summary", flush=True)
    for line in figures:
        print(line)
    missed = [line.split()[0] for line in figures if line.endswith(" MISSED")]
    met = sum(line.endswith(" met") for line in figures)
    print(f"# goals met: {met}, missed: {len(missed)} {' '.join(missed)}".rstrip())
    if failed:
        print(f"# benchmarks that failed: {', '.join(failed)}")
    print(f"# all benchmarks took {seconds:.0f} s", flush=True)
    if args.record:
        record(figures, seconds, args.quick)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
