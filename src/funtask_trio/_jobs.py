"""Jobs: one run of a task, in its own nursery under its own cancel scope.

`JobManager` owns the per-task slots (one job per task at a time), starts
jobs into the server-level jobs nursery, turns every outcome into a result,
hands async results to delivery, and drains on shutdown.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import trio

from ._events import ChangeFeed
from ._exceptions import ParamError, TaskError
from ._history import ResultStore, TaskHistory
from ._params import Params
from ._result import (
    CANCELLED,
    INVALID_PARAMS,
    MAX_DURATION_EXCEEDED,
    PANIC,
    WORKER_SHUTDOWN,
    JobResult,
    Result,
    fail,
)
from ._run import SERVER_SHUTTING_DOWN, Run
from ._timefmt import go_duration, utcnow

logger = logging.getLogger("funtask_trio")


class TaskFunction(Protocol):
    def __call__(self, run: Run, params: Params, /) -> Awaitable[Result]: ...


@dataclasses.dataclass(slots=True)
class TaskDef:
    """A registered task: its function and what ``/health`` and the dashboard show of it."""

    name: str
    fn: TaskFunction
    description: str | None = None
    example: Mapping[str, Any] | None = None
    keep_results: int | None = None


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _result_from_exception(error: BaseException, run: Run) -> Result:
    leaves = _leaves(error)
    for leaf in leaves:
        if isinstance(leaf, TaskError):
            return fail(leaf.code, leaf.message)
    for leaf in leaves:
        if isinstance(leaf, ParamError):
            return fail(INVALID_PARAMS, _text_of(leaf))
    first = leaves[0]
    logger.error(
        "task %s job %s raised %s",
        run.task,
        run.job_id,
        type(first).__name__,
        exc_info=error,
        extra={"task": run.task, "job_id": run.job_id},
    )
    return fail(PANIC, _text_of(first))


def _text_of(error: BaseException) -> str:
    """The exception's text, or its type's name when it has none (or its __str__ fails)."""
    try:
        text = str(error)
    except Exception:  # a broken __str__ must not take the server down with it
        text = ""
    return text or type(error).__name__


async def execute(
    fn: TaskFunction, run: Run, params: Params, *, max_duration: float | None = None
) -> Result:
    """Run `fn` under `run`'s cancel scope and turn whatever happens into a `Result`.

    A `TaskError` becomes its code, a `ParamError` ``invalid_params``, any
    other exception ``panic`` (traceback logged, never sent), cancellation
    ``cancelled`` with the run's reason, or ``max_duration_exceeded``. Only a
    cancellation from outside the job propagates.
    """
    scope = run._cancel_scope
    if max_duration is not None:
        scope.relative_deadline = max_duration
    returned: Any = _NOTHING
    try:
        with scope:
            async with trio.open_nursery() as nursery:
                run._nursery = nursery
                returned = await fn(run, params)
    except BaseException as error:  # a task may raise anything; only foreign Cancelled escapes
        if any(isinstance(leaf, trio.Cancelled) for leaf in _leaves(error)):
            raise
        result = _result_from_exception(error, run)
    else:
        if returned is _NOTHING:  # the job's own scope caught its cancellation
            if run.cancel_reason is None and max_duration is not None:
                result = fail(
                    MAX_DURATION_EXCEEDED,
                    f"job exceeded maximum duration ({go_duration(round(max_duration * 1e9))})",
                )
            else:
                result = fail(CANCELLED, run.cancel_reason or "cancelled")
        elif isinstance(returned, Result):
            result = returned
        else:
            result = fail(PANIC, f"task returned {type(returned).__name__}, not a Result")
            logger.error("task %s job %s: %s", run.task, run.job_id, result.message)
    finally:
        run._nursery = None
    if result.cause is not None:
        logger.warning(
            "task %s job %s failed: %s",
            run.task,
            run.job_id,
            result.message,
            exc_info=result.cause,
        )
    if not result.success and run.current_step and not result.last_step:
        result = dataclasses.replace(result, last_step=run.current_step)
    return result


_NOTHING: Any = object()


class Job:
    """One run of a task: from start until its result is stored (delivery included)."""

    __slots__ = (
        "job_id",
        "task",
        "params",
        "callback_url",
        "run",
        "started_at",
        "done",
        "result",
        "function_returned",
    )

    def __init__(
        self,
        task: TaskDef,
        job_id: str,
        params: Params,
        callback_url: str | None,
        on_change: Callable[[], None],
    ) -> None:
        self.job_id = job_id
        self.task = task
        self.params = params
        self.callback_url = callback_url
        self.run = Run(job_id, task.name, on_change=on_change)
        self.started_at = trio.current_time()
        self.done = trio.Event()
        """Set once the result is stored and the slot released."""
        self.result: JobResult | None = None
        self.function_returned = False

    @property
    def running_s(self) -> float:
        return trio.current_time() - self.started_at

    def cancel(self, reason: str) -> None:
        self.run.cancel(reason)


class TaskSlot:
    """A task and the one job it may be running."""

    __slots__ = ("definition", "history", "current")

    def __init__(self, definition: TaskDef, history: TaskHistory) -> None:
        self.definition = definition
        self.history = history
        self.current: Job | None = None


class Delivery(Protocol):
    async def __call__(self, job: Job, result: JobResult, *, final: bool) -> None: ...


class JobManager:
    """Owns the task slots and the jobs nursery for one serving lifetime."""

    def __init__(
        self,
        tasks: Mapping[str, TaskDef],
        *,
        result_history: int,
        max_duration: float | None,
        feed: ChangeFeed,
        deliver: Delivery,
    ) -> None:
        self.results = ResultStore()
        self.slots = {
            name: TaskSlot(
                definition,
                self.results.history(name, definition.keep_results or result_history),
            )
            for name, definition in sorted(tasks.items())
        }
        self.max_duration = max_duration
        self.feed = feed
        self.draining = False
        self._deliver = deliver
        self._jobs_nursery: trio.Nursery | None = None
        self._deliveries_nursery: trio.Nursery | None = None
        self._active = 0
        self._idle = trio.Event()
        self._idle.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the jobs and deliveries nurseries open until cancelled."""
        async with trio.open_nursery() as deliveries, trio.open_nursery() as jobs:
            self._deliveries_nursery = deliveries
            self._jobs_nursery = jobs
            task_status.started()
            await trio.sleep_forever()

    def start(self, slot: TaskSlot, job_id: str, params: Params, callback_url: str | None) -> Job:
        """Occupy `slot` with a new job and start it. The caller has checked the slot is free.

        Raises `RuntimeError` once draining has begun (the caller answers 503).
        """
        assert self._jobs_nursery is not None and slot.current is None
        if self.draining:
            raise RuntimeError("draining: no new jobs")
        job = Job(slot.definition, job_id, params, callback_url, self.feed.notify)
        # Spawned first: should that fail, no slot or counter is left claimed.
        self._jobs_nursery.start_soon(self._run_job, slot, job, name=f"job {slot.definition.name}")
        slot.current = job
        if self._active == 0:
            self._idle = trio.Event()
        self._active += 1
        self.feed.notify(lifecycle=True)
        return job

    async def _run_job(self, slot: TaskSlot, job: Job) -> None:
        try:
            result = await execute(
                slot.definition.fn, job.run, job.params, max_duration=self.max_duration
            )
        except Exception:  # a bug of ours: it must neither break the nursery nor hold the slot
            logger.exception(
                "task %s job %s: internal error running the job",
                job.task.name,
                job.job_id,
                extra={"task": job.task.name, "job_id": job.job_id},
            )
            result = fail(PANIC, "internal error")
        job.function_returned = True
        if job.result is not None:  # given up on at shutdown: its result is already out
            return
        job_result = self._job_result(job, result)
        if job.callback_url is None:
            self._finish(slot, job, job_result)
            return
        assert self._deliveries_nursery is not None
        self._deliveries_nursery.start_soon(self._deliver_then_finish, slot, job, job_result)

    def _job_result(self, job: Job, result: Result) -> JobResult:
        return JobResult.build(
            job_id=job.job_id,
            task=job.task.name,
            result=result,
            duration_s=job.running_s,
            finished=utcnow(),
        )

    async def _deliver_then_finish(self, slot: TaskSlot, job: Job, result: JobResult) -> None:
        try:
            await self._deliver(job, result, final=self.draining)
        finally:
            self._finish(slot, job, result)

    def _finish(self, slot: TaskSlot, job: Job, result: JobResult) -> None:
        job.result = result
        self.results.add(slot.history, result)
        if slot.current is job:
            slot.current = None
        self._active -= 1
        if self._active == 0:
            self._idle.set()
        job.done.set()
        self.feed.notify(lifecycle=True)
        # Successes at DEBUG: a log line per job costs 4-10% of a sync run.
        logger.log(
            logging.DEBUG if result.success else logging.INFO,
            "task %s job %s finished: %s in %s",
            job.task.name,
            job.job_id,
            "ok" if result.success else result.error_code,
            result.duration,
            extra={"task": job.task.name, "job_id": job.job_id},
        )

    def running_jobs(self) -> list[Job]:
        return [slot.current for slot in self.slots.values() if slot.current is not None]

    def begin_drain(self) -> None:
        """Refuse new jobs from now on and cancel every running one. Idempotent."""
        self.draining = True
        for job in self.running_jobs():
            job.cancel(SERVER_SHUTTING_DOWN)

    async def drain(self, timeout: float) -> bool:
        """Cancel every job, wait up to `timeout` for jobs and deliveries, give up on the rest.

        A job whose function still has not returned then gets a
        ``worker_shutdown`` result, delivered with one attempt. Returns True
        when everything ended on its own.
        """
        self.begin_drain()
        with trio.move_on_after(timeout):
            await self._idle.wait()
            return True
        stuck = [job for job in self.running_jobs() if not job.function_returned]
        async with trio.open_nursery() as nursery:
            for job in stuck:
                slot = self.slots[job.task.name]
                result = self._job_result(
                    job,
                    Result(
                        success=False,
                        error_code=WORKER_SHUTDOWN,
                        message=SERVER_SHUTTING_DOWN,
                        last_step=job.run.current_step,
                    ),
                )
                logger.warning(
                    "task %s job %s did not stop within %ss: worker_shutdown",
                    job.task.name,
                    job.job_id,
                    timeout,
                    extra={"task": job.task.name, "job_id": job.job_id},
                )
                job.result = result
                # Dead letter for every one (PROTOCOL: shutdown step 4), plus one
                # delivery attempt for those with a callback.
                nursery.start_soon(self._deliver_then_finish, slot, job, result)
        return False

    def cancel_all(self) -> None:
        """Final step of shutdown: cancel whatever is still running, deliveries included."""
        for nursery in (self._jobs_nursery, self._deliveries_nursery):
            if nursery is not None:
                nursery.cancel_scope.cancel()
