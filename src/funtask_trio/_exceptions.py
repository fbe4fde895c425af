"""Every exception funtask-trio raises, in one place.

FuntaskError
├── ConfigError          the server's configuration is unusable (all problems listed)
├── ParamError           a typed parameter read failed (also a ValueError)
├── TaskError            raised by a task: the job fails with this code and message
└── ClientError          the server answered a funtask_trio.client call with an error
    ├── Unauthorized     401
    ├── TaskNotFound     404 for a task name
    ├── ResultNotFound   404 for a jobId
    ├── TaskBusy         409, carries the job the task is busy with
    ├── InvalidRequest   400 / 413
    ├── ServerDraining   503 while the server shuts down
    ├── SyncTimeout      504, the sync call outlived the server's sync timeout
    └── ServerError      anything else, including a connection failure (status 0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class FuntaskError(Exception):
    """Base class of every funtask-trio exception."""


class ConfigError(FuntaskError):
    """The server's configuration is unusable; `problems` lists every problem found."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid funtask configuration: " + "; ".join(self.problems))


class ParamError(FuntaskError, ValueError):
    """A typed parameter read failed; the server turns it into ``invalid_params``.

    `problems` holds ``(key, expected_type)`` pairs, one per failed read.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        listed = ", ".join(f"{key} (expected {expected})" for key, expected in self.problems)
        super().__init__(f"missing or invalid parameters: {listed}")


class TaskError(FuntaskError):
    """Raise from a task to fail the job with `code` and `message`.

    The same as returning ``ft.fail(code, message)``.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class ClientError(FuntaskError):
    """The server answered with an error status (or could not be reached: status 0).

    `status` is the HTTP status, `error` the server's ``error`` text and `body`
    the whole decoded JSON body (empty when there was none).
    """

    def __init__(self, status: int, error: str, body: dict[str, Any] | None = None) -> None:
        self.status = status
        self.error = error
        self.body = body or {}
        super().__init__(f"{status}: {error}" if status else error)


class Unauthorized(ClientError):
    """401: the token is missing or wrong."""


class TaskNotFound(ClientError):
    """404: the server has no task of that name."""


class ResultNotFound(ClientError):
    """404: no stored result has that jobId (never run, or evicted)."""


class TaskBusy(ClientError):
    """409: the task is running a different job; `current_job` describes it."""

    @property
    def current_job(self) -> dict[str, Any]:
        job = self.body.get("currentJob")
        return job if isinstance(job, dict) else {}


class InvalidRequest(ClientError):
    """400 or 413: the server refused the request (bad body, callback URL, jobId, size)."""


class ServerDraining(ClientError):
    """503: the server is shutting down (or not ready)."""


class SyncTimeout(ClientError):
    """504: the sync call outlived the server's sync timeout; the job was cancelled."""


class ServerError(ClientError):
    """Any other answer, or no answer at all (status 0: connection failed)."""
