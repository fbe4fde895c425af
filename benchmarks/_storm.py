"""A progress storm watched by SSE subscribers: the shared core of progress.py and fanout.py.

The ``storm`` task reports ``steps`` progress updates as fast as it can,
while `subscribers` clients read ``/events``. Each subscriber counts the
frames it gets and notes when it first holds the final snapshot (the one
whose ``storm`` entry has our job as ``lastJob``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid

import trio

from ._common import Target, cpu_seconds
from ._http import Connection

CONNECT_TIMEOUT_S = 30.0
FINAL_TIMEOUT_S = 10.0
GO_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration_s(text: str) -> float:
    """Seconds in a Go duration (``1.234s``, ``15ms``, ``1m2.5s``)."""
    return sum(float(number) * GO_UNITS[unit] for number, unit in GO_DURATION_PART.findall(text))


@dataclasses.dataclass
class StormResult:
    """One storm: its wall time, the job's own time, and what each subscriber saw."""

    steps: int
    wall_s: float
    job_s: float
    cpu_s: float
    frames: list[int]
    lag_s: float | None
    missing_final: int

    @property
    def calls_per_s(self) -> float:
        """Progress calls per second of the job's own (wall) time."""
        return self.steps / self.job_s if self.job_s > 0 else float("nan")

    @property
    def calls_per_cpu_s(self) -> float:
        """Progress calls per second of server CPU (NaN when the server's pid is unknown)."""
        return self.steps / self.cpu_s if self.cpu_s > 0 else float("nan")


class Subscriber:
    """One ``/events`` reader: frames counted, arrival of the final snapshot noted."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.frames = 0
        self.final_at: float | None = None

    async def run(self, where: Target, *, task_status: trio.TaskStatus[None]) -> None:
        connection = await Connection.open(where.url)
        try:
            wanted = {**where.auth, "Accept": "text/event-stream"}
            await connection.send(connection.build("GET", "/events", headers=wanted))
            status, headers = await connection.response_head()
            if status != 200:
                raise RuntimeError(f"/events answered {status}")
            pending = b""
            started = False
            async for chunk in connection.reader.body_chunks(headers):
                pending += chunk
                while (end := pending.find(b"\n\n")) >= 0:
                    event, pending = pending[:end], pending[end + 2 :]
                    if not event.startswith(b"data: "):
                        continue  # a keepalive comment
                    self.frames += 1
                    if self.final_at is None and self.watch.is_final(event[6:]):
                        self.final_at = time.perf_counter()
                        self.watch.one_final()
                if not started and self.frames:
                    started = True
                    task_status.started()
        finally:
            await connection.aclose()


class Watch:
    """What the subscribers look for: the storm job finished, in the snapshot."""

    def __init__(self, subscribers: int) -> None:
        self.job_id = ""
        self.finals = 0
        self.subscribers = subscribers
        self.all_final = trio.Event()

    def expect(self, job_id: str) -> None:
        self.job_id = job_id
        self.finals = 0
        self.all_final = trio.Event()

    def is_final(self, data: bytes) -> bool:
        if not self.job_id or self.job_id.encode() not in data:
            return False
        last_job = json.loads(data)["tasks"]["storm"].get("lastJob") or {}
        return bool(last_job.get("jobId") == self.job_id)

    def one_final(self) -> None:
        self.finals += 1
        if self.finals == self.subscribers:
            self.all_final.set()


async def storms(where: Target, steps: int, subscribers: int, repeat: int) -> list[StormResult]:
    """`repeat` storms of `steps` with `subscribers` connected (all of them reading)."""
    watch = Watch(subscribers)
    readers = [Subscriber(watch) for _ in range(subscribers)]
    results = []
    async with trio.open_nursery() as nursery:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            for reader in readers:
                await nursery.start(reader.run, where)
        driver = await Connection.open(where.url)
        try:
            for _ in range(repeat):
                results.append(await _storm(driver, where, steps, watch, readers))
        finally:
            await driver.aclose()
        nursery.cancel_scope.cancel()
    return results


async def _storm(
    driver: Connection, where: Target, steps: int, watch: Watch, readers: list[Subscriber]
) -> StormResult:
    await trio.sleep(0.2)  # let the frames about the previous job settle
    job_id = f"storm-{uuid.uuid4()}"
    watch.expect(job_id)
    for reader in readers:
        reader.frames = 0
        reader.final_at = None
    document = {"jobId": job_id, "params": {"steps": steps}}
    cpu_started = cpu_seconds(where.pid)
    started = time.perf_counter()
    response = await driver.post_json("/run/storm", document, where.auth)
    answered = time.perf_counter()
    cpu_s = cpu_seconds(where.pid) - cpu_started
    if response.status != 200 or not response.json().get("success"):
        raise RuntimeError(f"storm failed: {response.status} {response.body[:300]!r}")
    result = response.json()
    job_s = (result.get("data") or {}).get("seconds") or go_duration_s(result["duration"])
    lag_s = None
    if readers:
        with trio.move_on_after(FINAL_TIMEOUT_S):
            await watch.all_final.wait()
        finals = [reader.final_at for reader in readers if reader.final_at is not None]
        if finals:
            lag_s = max(0.0, max(finals) - answered)
    return StormResult(
        steps=steps,
        wall_s=answered - started,
        job_s=job_s,
        cpu_s=cpu_s,
        frames=[reader.frames for reader in readers],
        lag_s=lag_s,
        missing_final=sum(reader.final_at is None for reader in readers),
    )
