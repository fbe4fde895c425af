"""Task results, and their one serialized form on the wire.

`Result` is what a task returns. `JobResult` is a finished job as the
protocol carries it; `JobResult.serialize` produces the exact bytes that go to
the sync caller, the dead letter and the callback, formatted as Go's
``encoding/json`` would (compact, map keys sorted, ``<>&`` escaped).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from collections.abc import Mapping
from json.encoder import encode_basestring as _encode_basestring
from typing import Any, Final

from ._timefmt import format_duration, format_time

MAX_RESULT_BYTES: Final = 10 * 1024 * 1024

# Error codes the server itself produces.
INVALID_PARAMS: Final = "invalid_params"
PANIC: Final = "panic"
CANCELLED: Final = "cancelled"
MAX_DURATION_EXCEEDED: Final = "max_duration_exceeded"
WORKER_SHUTDOWN: Final = "worker_shutdown"
RESULT_TOO_LARGE: Final = "result_too_large"
RESULT_SERIALIZATION_FAILED: Final = "result_serialization_failed"


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one job: build it with `ok`, `fail` or `fail_from_error`.

    Immutable: `with_data` and `with_cause` return new results.
    """

    success: bool
    message: str = ""
    error_code: str = ""
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    last_step: str = ""
    cause: BaseException | None = dataclasses.field(default=None, compare=False)

    def with_data(self, mapping: Mapping[str, Any] | None = None, /, **items: Any) -> Result:
        """A copy with `mapping` and `items` added to ``data`` (later keys win)."""
        data = dict(self.data)
        if mapping:
            data.update(mapping)
        data.update(items)
        return dataclasses.replace(self, data=data)

    def with_cause(self, cause: BaseException) -> Result:
        """A copy carrying `cause`: logged by the server, never sent anywhere."""
        return dataclasses.replace(self, cause=cause)


def ok(message: str = "") -> Result:
    """A successful result with an optional human-readable message."""
    return Result(success=True, message=message)


def fail(code: str, message: str) -> Result:
    """A failed result with a machine-readable `code` and a human-readable `message`."""
    return Result(success=False, error_code=code, message=message)


def fail_from_error(error: BaseException, fallback_code: str) -> Result:
    """A failed result from an exception, with the exception attached as its cause.

    The code is ``error.error_code`` when the exception has one (a non-empty
    string), else `fallback_code`; the message is ``error.user_message`` when
    present, else ``str(error)``.
    """
    code = getattr(error, "error_code", None)
    message = getattr(error, "user_message", None)
    return Result(
        success=False,
        error_code=code if isinstance(code, str) and code else fallback_code,
        message=message if isinstance(message, str) else str(error),
        cause=error,
    )


_GO_ESCAPES: Final = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


def utf8(text: str) -> bytes:
    """`text` as UTF-8, with lone surrogates replaced by U+FFFD as Go's encoding/json does."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


# Built once: json.dumps() with options builds a new encoder on every call.
_SORTED_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), sort_keys=True
)
_ORDERED_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), sort_keys=False
)


def _go_escape(text: str) -> str:
    # These characters only ever occur inside JSON strings, so replacing them is safe.
    for raw, escaped in _GO_ESCAPES:
        if raw in text:
            text = text.replace(raw, escaped)
    return text


def go_json(value: Any, *, sort_keys: bool = True) -> str:
    """`value` as Go's ``json.Marshal`` writes it: compact, keys sorted, HTML-safe.

    Raises `ValueError` or `TypeError` when `value` is not JSON (NaN included).
    """
    encoder = _SORTED_ENCODER if sort_keys else _ORDERED_ENCODER
    return _go_escape(encoder.encode(value))


def _go_string(text: str) -> str:
    """A JSON string literal as Go writes it (the hot path of `go_json` for strings)."""
    return _go_escape(_encode_basestring(text))


@dataclasses.dataclass(frozen=True, slots=True)
class JobResult:
    """A finished job, as stored for ``/result`` and history and sent to callers."""

    job_id: str
    task: str
    success: bool
    message: str
    error_code: str
    step: str
    duration_s: float
    finished: _dt.datetime
    body: bytes
    """The serialized result: the exact bytes of the sync answer, dead letter and callback."""

    @classmethod
    def build(
        cls, *, job_id: str, task: str, result: Result, duration_s: float, finished: _dt.datetime
    ) -> JobResult:
        """Serialize `result` once, replacing it by a failure when it can't be sent."""
        try:
            body = _serialize(job_id, result, duration_s)
            if len(body) > MAX_RESULT_BYTES:
                result = fail(RESULT_TOO_LARGE, "result exceeds maximum size (10 MB)")
                body = _serialize(job_id, result, duration_s)
        except (TypeError, ValueError, RecursionError):
            result = fail(RESULT_SERIALIZATION_FAILED, "result could not be serialized")
            body = _serialize(job_id, result, duration_s)
        return cls(
            job_id=job_id,
            task=task,
            success=result.success,
            message=result.message,
            error_code=result.error_code,
            step=result.last_step,
            duration_s=duration_s,
            finished=finished,
            body=body,
        )

    @property
    def duration(self) -> str:
        return format_duration(self.duration_s)

    def summary(self) -> dict[str, Any]:
        """The entry for ``results`` in a health snapshot."""
        entry: dict[str, Any] = {"jobId": self.job_id, "success": self.success}
        if not self.success:
            entry["error"] = self.error_code
        if self.message:
            entry["message"] = self.message
        if not self.success and self.step:
            entry["step"] = self.step
        entry["duration"] = self.duration
        entry["finished"] = format_time(self.finished)
        return entry

    def last_job(self) -> dict[str, Any]:
        """The ``lastJob`` entry of a health snapshot."""
        entry: dict[str, Any] = {
            "jobId": self.job_id,
            "success": self.success,
            "finished": format_time(self.finished),
            "duration": self.duration,
        }
        if not self.success:
            entry["error"] = self.error_code
        return entry


def _serialize(job_id: str, result: Result, duration_s: float) -> bytes:
    # Field order follows Go's struct: jobId, success, message, duration, data, error.
    parts = ['{"jobId":', _go_string(job_id), ',"success":', "true" if result.success else "false"]
    if result.success and result.message:
        parts += [',"message":', _go_string(result.message)]
    parts += [',"duration":', _go_string(format_duration(duration_s))]
    if result.success:
        if result.data:
            parts += [',"data":', go_json(dict(result.data))]
    else:
        parts += [',"error":{"code":', _go_string(result.error_code)]
        parts += [',"message":', _go_string(result.message)]
        if result.last_step:
            parts += [',"step":', _go_string(result.last_step)]
        parts.append("}")
    parts.append("}")
    return utf8("".join(parts))
