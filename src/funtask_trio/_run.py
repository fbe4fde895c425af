"""`Run`: what a task function gets to report progress and to be cancelled."""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from typing import Any

import trio

# Why a job was cancelled, as the `cancelled` result's message says.
STOPPED_BY_REQUEST = "stopped by request"
SERVER_SHUTTING_DOWN = "server is shutting down"
SYNC_CALLER_DISCONNECTED = "sync caller disconnected"
SYNC_TIMEOUT_EXCEEDED = "sync timeout exceeded"


def _format(msg: str, args: tuple[Any, ...]) -> str:
    return msg % args if args else msg


class Run:
    """The execution context of one job.

    A task reports what it is doing with `step` and `progress` (both are
    checkpoints) and may start child tasks in `nursery`. Cancellation (``/stop``,
    shutdown, max duration, a sync caller leaving) is ordinary Trio
    cancellation of the job's cancel scope: `trio.Cancelled` at the next
    checkpoint. Clean up with ``try/finally`` as in any Trio program.
    """

    __slots__ = (
        "job_id",
        "task",
        "current_step",
        "progress_current",
        "progress_total",
        "_last_step_ts",
        "cancel_reason",
        "_cancel_scope",
        "_nursery",
        "_steps",
        "_on_change",
    )

    def __init__(
        self,
        job_id: str,
        task: str,
        *,
        record_steps: bool = False,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.job_id = job_id
        """The job's id, as the caller gave it or the server made it."""
        self.task = task
        """The name of the task this job runs."""
        self.current_step = ""
        self.progress_current = 0
        self.progress_total = 0
        self._last_step_ts: float | None = None
        self.cancel_reason: str | None = None
        """Why the job was cancelled (None: not cancelled, or ran out of time)."""
        self._cancel_scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._steps: list[str] | None = [] if record_steps else None
        self._on_change = on_change

    @property
    def nursery(self) -> trio.Nursery:
        """A nursery scoped to the job: its children are cancelled with the job.

        Raises `RuntimeError` outside the job's execution.
        """
        if self._nursery is None:
            raise RuntimeError("run.nursery exists only while the job runs")
        return self._nursery

    @property
    def steps(self) -> tuple[str, ...]:
        """Reported steps in order: all of them for a test run, only the latest on a server."""
        if self._steps is not None:
            return tuple(self._steps)
        return (self.current_step,) if self.current_step else ()

    @property
    def cancel_called(self) -> bool:
        """True once the job has been asked to stop, or its max duration has passed."""
        return self._cancel_scope.cancel_called

    def cancel(self, reason: str = STOPPED_BY_REQUEST) -> None:
        """Cancel the job as ``/stop`` does; the first reason given is the one reported."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self._cancel_scope.cancel()

    @property
    def last_step_at(self) -> _dt.datetime | None:
        """When the latest step was reported (UTC), or None before the first."""
        if self._last_step_ts is None:
            return None
        return _dt.datetime.fromtimestamp(self._last_step_ts, _dt.UTC)

    def _record(self, text: str) -> None:
        self.current_step = text
        self._last_step_ts = time.time()
        if self._steps is not None:
            self._steps.append(text)
        if self._on_change is not None:
            self._on_change()

    async def step(self, msg: str, *args: Any) -> None:
        """Report what the job is doing now (``%``-formatted with `args`). A checkpoint."""
        self._record(_format(msg, args))
        await trio.lowlevel.checkpoint()

    async def progress(self, current: int, total: int, msg: str = "", *args: Any) -> None:
        """Report `current` of `total` items done, with a step message. A checkpoint."""
        self.progress_current = current
        self.progress_total = total
        self._record(_format(msg, args))
        await trio.lowlevel.checkpoint()

    @property
    def percent(self) -> int:
        """Progress in whole percent (0 while no total is known)."""
        if self.progress_total <= 0:
            return 0
        return self.progress_current * 100 // self.progress_total
