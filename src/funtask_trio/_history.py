"""Finished jobs' results: the last N per task, and an index for ``/result``."""

from __future__ import annotations

from collections import deque

from ._result import JobResult


class TaskHistory:
    """One task's most recent results, newest first, at most `keep` of them."""

    __slots__ = ("keep", "_entries", "_by_job_id")

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._entries: deque[JobResult] = deque()
        self._by_job_id: dict[str, JobResult] = {}

    def add(self, result: JobResult) -> JobResult | None:
        """Store `result`; return the evicted oldest entry when over `keep`."""
        previous = self._by_job_id.get(result.job_id)
        if previous is not None:
            self._entries.remove(previous)
        self._entries.appendleft(result)
        self._by_job_id[result.job_id] = result
        if len(self._entries) > self.keep:
            evicted = self._entries.pop()
            del self._by_job_id[evicted.job_id]
            return evicted
        return None

    def get(self, job_id: str) -> JobResult | None:
        return self._by_job_id.get(job_id)

    def newest_first(self) -> list[JobResult]:
        return list(self._entries)

    @property
    def latest(self) -> JobResult | None:
        return self._entries[0] if self._entries else None


class ResultStore:
    """Every task's history, plus the jobId index that ``GET /result`` searches."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskHistory] = {}
        self._by_job_id: dict[str, JobResult] = {}

    def history(self, task: str, keep: int) -> TaskHistory:
        history = self._tasks.get(task)
        if history is None:
            history = self._tasks[task] = TaskHistory(keep)
        return history

    def add(self, history: TaskHistory, result: JobResult) -> None:
        self._by_job_id[result.job_id] = result
        evicted = history.add(result)
        if evicted is not None and self._by_job_id.get(evicted.job_id) is evicted:
            # Another task may hold a result under the same jobId: it stays findable.
            remaining = (other.get(evicted.job_id) for other in self._tasks.values())
            survivor = next((found for found in remaining if found is not None), None)
            if survivor is None:
                del self._by_job_id[evicted.job_id]
            else:
                self._by_job_id[evicted.job_id] = survivor

    def find(self, job_id: str) -> JobResult | None:
        return self._by_job_id.get(job_id)
