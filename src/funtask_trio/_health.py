"""Health snapshots: what ``/health`` answers and every ``/events`` frame carries."""

from __future__ import annotations

from typing import Any

from ._jobs import Job, TaskSlot
from ._result import go_json, utf8
from ._timefmt import format_running, format_time


def current_job(job: Job) -> dict[str, Any]:
    """The ``currentJob`` entry of a running task."""
    run = job.run
    entry: dict[str, Any] = {"jobId": job.job_id, "running": format_running(job.running_s)}
    if run.current_step:
        entry["currentStep"] = run.current_step
    if run.progress_total > 0:
        entry["progress"] = {
            "current": run.progress_current,
            "total": run.progress_total,
            "percent": run.percent,
        }
    if run.last_step_at is not None:
        entry["lastStepAt"] = format_time(run.last_step_at)
    return entry


def task_entry(slot: TaskSlot) -> dict[str, Any]:
    """One task's entry in the snapshot; empty fields are omitted."""
    definition = slot.definition
    entry: dict[str, Any] = {"status": "running" if slot.current is not None else "idle"}
    if definition.description:
        entry["description"] = definition.description
    if definition.example:
        entry["example"] = dict(definition.example)
    if slot.current is not None:
        entry["currentJob"] = current_job(slot.current)
    history = slot.history.newest_first()
    if history:
        entry["lastJob"] = history[0].last_job()
        entry["results"] = [result.summary() for result in history]
    return entry


def snapshot(
    name: str, *, draining: bool, uptime_s: float, slots: dict[str, TaskSlot]
) -> dict[str, Any]:
    """The whole health snapshot, tasks sorted by name."""
    return {
        "name": name,
        "status": "draining" if draining else "ok",
        "uptime": format_running(uptime_s),
        "tasks": {task: task_entry(slot) for task, slot in sorted(slots.items())},
    }


def serialize(document: dict[str, Any]) -> bytes:
    """A snapshot as compact JSON (example maps with their keys sorted, as Go writes them)."""
    return utf8(go_json(document))
