"""Dead letters: every async result is on disk before its first delivery attempt.

``<dir>/<jobId>.json`` holds the exact bytes delivered (as Go writes them);
``<dir>/<jobId>.callback`` beside it records where they go, so pending
letters can be replayed after a crash. Both are mode 0600 and written
atomically (temporary file, fsync, rename): a crash never leaves half a file.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import secrets
from functools import partial
from pathlib import Path
from typing import Final

import trio

RESULT_SUFFIX: Final = ".json"
CALLBACK_SUFFIX: Final = ".callback"
MAX_JOB_ID_BYTES: Final = 200  # leaves room for suffixes within a 255-byte file name


def is_safe_job_id(job_id: str) -> bool:
    """True when `job_id` can be a file name inside the dead-letter directory, and nothing else."""
    return (
        job_id not in ("", ".", "..")
        and not any(char in job_id for char in "/\\\x00")
        and len(job_id.encode("utf-8", "surrogatepass")) <= MAX_JOB_ID_BYTES
    )


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """A result on disk that has not been delivered (yet)."""

    job_id: str
    path: Path
    body: bytes
    callback_url: str | None
    task: str | None
    created: _dt.datetime


class DeadLetterDir:
    """The dead-letter directory: atomic writes, removal after delivery, listing for replay."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def ensure(self) -> str | None:
        """Create the directory (0700) if missing; return a problem description, or None."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            return f"dead-letter directory {str(self.path)!r} cannot be created: {error}"
        if not os.access(self.path, os.W_OK | os.X_OK):
            return f"dead-letter directory {str(self.path)!r} is not writable"
        return None

    def result_path(self, job_id: str) -> Path:
        """Where `job_id`'s dead letter lives. Raises `ValueError` for an unsafe jobId."""
        if not is_safe_job_id(job_id):
            raise ValueError(f"jobId {job_id!r} cannot name a dead letter")
        return self.path / (job_id + RESULT_SUFFIX)

    def _write_atomically(self, target: Path, data: bytes) -> None:
        # A fresh name per write (O_EXCL): two tasks may finish jobs with the same
        # jobId at once, and a leftover from a crashed process is never reused.
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(temporary, flags, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        self._sync_directory()

    def _sync_directory(self) -> None:
        """Make the rename itself durable (a crash right after must not lose the letter)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            return  # not supported here (e.g. Windows); the data itself is synced
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def write_sync(self, job_id: str, body: bytes, callback_url: str | None, task: str) -> None:
        """Write the letter and its callback record. Raises `OSError` (disk full, read-only).

        Without `callback_url` (a sync job given up on at shutdown) only the
        ``.json`` is written: a record to recover by hand, never replayed.
        """
        result_path = self.result_path(job_id)
        if callback_url is not None:
            record = json.dumps({"callbackUrl": callback_url, "task": task}).encode()
            # The callback record first: a .json on disk always knows where it goes.
            self._write_atomically(result_path.with_suffix(CALLBACK_SUFFIX), record)
        self._write_atomically(result_path, body)

    async def write(self, job_id: str, body: bytes, callback_url: str | None, task: str) -> None:
        await trio.to_thread.run_sync(self.write_sync, job_id, body, callback_url, task)

    def remove_sync(self, job_id: str, *, only_if: bytes | None = None) -> None:
        """Remove the letter and its record; with `only_if`, only while it still holds those bytes.

        A replayed letter is removed only if unchanged: a new job with the
        same jobId may have written its own letter meanwhile.
        """
        result_path = self.result_path(job_id)
        if only_if is not None:
            try:
                if result_path.read_bytes() != only_if:
                    return
            except FileNotFoundError:
                return
        result_path.unlink(missing_ok=True)
        result_path.with_suffix(CALLBACK_SUFFIX).unlink(missing_ok=True)

    async def remove(self, job_id: str, *, only_if: bytes | None = None) -> None:
        await trio.to_thread.run_sync(partial(self.remove_sync, job_id, only_if=only_if))

    def load(self, job_id: str) -> DeadLetter:
        """Read one pending letter. Raises `FileNotFoundError` when there is none."""
        result_path = self.result_path(job_id)
        body = result_path.read_bytes()
        callback_url = task = None
        try:
            record = json.loads(result_path.with_suffix(CALLBACK_SUFFIX).read_bytes())
        except (OSError, ValueError):
            record = None  # a letter written by Go, or by hand: no callback record
        if isinstance(record, dict):
            # Anything but strings would reach httpx (and fail there) on replay.
            if isinstance(record.get("callbackUrl"), str) and record["callbackUrl"]:
                callback_url = record["callbackUrl"]
            if isinstance(record.get("task"), str) and record["task"]:
                task = record["task"]
        created = _dt.datetime.fromtimestamp(result_path.stat().st_mtime, _dt.UTC)
        return DeadLetter(job_id, result_path, body, callback_url, task, created)

    def pending(self) -> list[DeadLetter]:
        """Every letter in the directory, oldest first."""
        letters = []
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        for name in names:
            if not name.endswith(RESULT_SUFFIX):
                continue
            job_id = name[: -len(RESULT_SUFFIX)]
            if not is_safe_job_id(job_id):
                continue
            try:
                letters.append(self.load(job_id))
            except OSError:
                continue
        return sorted(letters, key=lambda letter: letter.created)
