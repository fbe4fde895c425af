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
FIGURE_LINE = re.compile(r"^[a-z0-9_.]+ \S+ \S+( goal\S+ (met|MISSED|n/a))?$")
START_MARK = "<!-- figures:start -->"
END_MARK = "<!-- figures:end -->"
TOTAL_LINE = re.compile(r"^# all benchmarks took (\S+) s")
TOOL_LINE = re.compile(r"^# load: (\w+),")
LOAD_LINE = re.compile(r"^# load average (?:before|after): (\S+)")


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


def load_average() -> str:
    """The 1-minute load average: how much else the machine was doing."""
    return f"{os.getloadavg()[0]:.2f}"


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


def record(figures: list[str], seconds: float, how: str, loads: list[str], tool: str) -> None:
    """Replace the figures section of README.md."""
    when = datetime.date.today().isoformat()
    section = "\n".join(
        [
            START_MARK,
            f"Recorded {when} by `{how}`: benchmarks took {seconds:.0f} s; HTTP load by {tool}.",
            f"Machine: {machine()}; 1-minute load average {' before, '.join(loads)}"
            f"{' after' if len(loads) > 1 else ''} (after: with the benchmark's own load).",
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


def record_from(log: Path) -> None:
    """Record the figures of an earlier run's output (``make bench | tee LOG``)."""
    lines = log.read_text().splitlines()
    loads = [m.group(1) for line in lines if (m := LOAD_LINE.match(line))]
    tools = [m.group(1) for line in lines if (m := TOOL_LINE.match(line))]
    totals = [float(m.group(1)) for line in lines if (m := TOTAL_LINE.match(line))]
    if "## summary" in lines:  # every figure is printed twice: keep the summary's
        lines = lines[lines.index("## summary") :]
    figures = [line for line in lines if FIGURE_LINE.match(line)]
    seconds = totals[-1] if totals else float("nan")
    record(figures, seconds, "make bench", loads, tools[0] if tools else loader())


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
        record_from(Path(args.record_from))
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
    loads = [load_average()]
    print(f"# load average before: {loads[0]}", flush=True)
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
    loads.append(load_average())
    print(f"# load average after: {loads[-1]}", flush=True)
    print(f"# all benchmarks took {seconds:.0f} s", flush=True)
    if args.record:
        how = "python -m benchmarks" + (" --quick" if args.quick else "")
        record(figures, seconds, how, loads, loader())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
