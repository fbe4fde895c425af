"""A client for funtask servers (this library's or the Go one's), built on httpx.

`FuntaskClient` is async (Trio, or asyncio where httpx runs); `SyncFuntaskClient`
blocks, for scripts and orchestrator operators (Airflow, ...)::

    async with FuntaskClient("http://127.0.0.1:8080", token) as client:
        result = await client.run("greet", {"name": "Trio"})
        print(result.message)           # Hello, Trio!

Answers come back as typed objects (`JobResult`, `JobRunning`, `StopOutcome`);
error statuses raise the `ClientError` subclasses re-exported here, each
carrying the HTTP ``status`` and the server's ``error`` text. A server that
cannot be reached raises `ServerError` with status 0. A *failed job* is not
an exception: it is a `JobResult` with ``success`` False.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import urllib.parse
from collections.abc import AsyncGenerator, Iterator, Mapping
from types import TracebackType
from typing import Any, Final, Self, overload

import anyio
import httpx

from ._exceptions import (
    ClientError,
    InvalidRequest,
    ResultNotFound,
    ServerDraining,
    ServerError,
    SyncTimeout,
    TaskBusy,
    TaskNotFound,
    Unauthorized,
)

__all__ = [
    "ClientError",
    "EventStream",
    "FuntaskClient",
    "InvalidRequest",
    "JobResult",
    "JobRunning",
    "ResultNotFound",
    "ServerDraining",
    "ServerError",
    "StopOutcome",
    "SyncFuntaskClient",
    "SyncTimeout",
    "TaskBusy",
    "TaskNotFound",
    "Unauthorized",
]

DEFAULT_TIMEOUT_S: Final = 30.0
DEFAULT_RETRY_DELAY_S: Final = 1.0
DEFAULT_MAX_RETRIES: Final = 5

Params = Mapping[str, Any] | None

# -- answers -----------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?)(h|ms|m|s|us|\u00b5s|\u03bcs|ns)")
_UNIT_SECONDS: Final = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ns": 1e-9,
}


def parse_duration(text: str) -> float:
    """Seconds from Go's duration notation (``0s``, ``15ms``, ``1m2.5s``, ``1h0m0s``).

    Raises `ValueError` for anything else.
    """
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0.0
    position = 0
    seconds = 0.0
    for match in _DURATION_PART.finditer(body):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not body or position != len(body):
        raise ValueError(f"not a Go duration: {text!r}")
    return -seconds if text.startswith("-") else seconds


def _text(document: Mapping[str, Any], key: str) -> str:
    value = document.get(key)
    return value if isinstance(value, str) else ""


@dataclasses.dataclass(frozen=True, slots=True)
class JobResult:
    """A finished job's result, as ``/run`` (sync), ``/result`` and callbacks carry it.

    On success `message` and `data` hold what the task returned; on failure
    `error_code`, `error_message` and `step` (the last step the job
    reported) say what went wrong, and `message` is empty. `duration` is the
    server's text (Go notation, ``1.234s``); `duration_s` the same in
    seconds. `raw` is the whole decoded JSON document.
    """

    job_id: str
    success: bool
    message: str = ""
    duration: str = "0s"
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    error_code: str = ""
    error_message: str = ""
    step: str = ""
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> JobResult:
        """Build from a decoded result document (lenient: missing fields are empty)."""
        error = document.get("error")
        error = error if isinstance(error, Mapping) else {}
        data = document.get("data")
        return cls(
            job_id=_text(document, "jobId"),
            success=document.get("success") is True,
            message=_text(document, "message"),
            duration=_text(document, "duration") or "0s",
            data=data if isinstance(data, Mapping) else {},
            error_code=_text(error, "code"),
            error_message=_text(error, "message"),
            step=_text(error, "step"),
            raw=document,
        )

    @property
    def duration_s(self) -> float:
        """`duration` in seconds."""
        return parse_duration(self.duration)


@dataclasses.dataclass(frozen=True, slots=True)
class JobRunning:
    """``/run`` with the jobId of a job still running: no result yet.

    Ask again later (``run``/``result`` with the same jobId); `running` is the
    server's text (``3s``), `running_s` the same in seconds, `current_step`
    the job's latest step ("" before its first).
    """

    job_id: str
    running: str = "0s"
    current_step: str = ""
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> JobRunning:
        return cls(
            job_id=_text(document, "jobId"),
            running=_text(document, "running") or "0s",
            current_step=_text(document, "currentStep"),
            raw=document,
        )

    @property
    def running_s(self) -> float:
        """`running` in seconds."""
        return parse_duration(self.running)


@dataclasses.dataclass(frozen=True, slots=True)
class StopOutcome:
    """The answer to ``/stop``: `job_id` is the job asked to stop, None when the task was idle.

    ``/stop`` does not wait for the job to end; its result (``cancelled``)
    comes as usual: to the sync caller, the callback, and ``/result``.
    """

    task: str
    job_id: str | None
    message: str
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> StopOutcome:
        return cls(
            task=_text(document, "task"),
            job_id=_text(document, "jobId") or None,
            message=_text(document, "message"),
            raw=document,
        )

    @property
    def requested(self) -> bool:
        """True when a running job was asked to stop."""
        return self.job_id is not None


# -- requests and errors (pure) ------------------------------------------------


def _task_path(route: str, task: str) -> str:
    return f"/{route}/{urllib.parse.quote(task, safe='')}"


def _run_body(params: Params, job_id: str | None, callback_url: str | None) -> bytes:
    """The ``/run`` body. Raises `TypeError`/`ValueError` for params JSON can't carry."""
    document: dict[str, Any] = {}
    if job_id is not None:
        document["jobId"] = job_id
    if callback_url is not None:
        document["callbackUrl"] = callback_url
    document["params"] = dict(params or {})
    return json.dumps(document, allow_nan=False, separators=(",", ":")).encode()


def _decode_object(content: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    return document if isinstance(document, dict) else None


def _error_for(status: int, content: bytes, *, result_route: bool = False) -> ClientError:
    """The typed exception for an error answer (`result_route`: 404 means no such result)."""
    body = _decode_object(content)
    error = body.get("error") if body is not None else None
    if not isinstance(error, str):
        error = content.decode("utf-8", "replace").strip()[:200] or f"HTTP {status}"
    kind: type[ClientError]
    if status == 401:
        kind = Unauthorized
    elif status == 404:
        kind = ResultNotFound if result_route else TaskNotFound
    elif status == 409:
        kind = TaskBusy
    elif status in (400, 413):
        kind = InvalidRequest
    elif status == 503:
        kind = ServerDraining
    elif status == 504:
        kind = SyncTimeout
    else:
        kind = ServerError
    return kind(status, error, body)


def _check(response: httpx.Response, *, result_route: bool = False) -> dict[str, Any]:
    """The decoded JSON object of a 2xx answer; raises the typed error otherwise."""
    if not response.is_success:
        raise _error_for(response.status_code, response.content, result_route=result_route)
    body = _decode_object(response.content)
    if body is None:
        raise ServerError(response.status_code, "the server's answer is not a JSON object", None)
    return body


def _run_answer(body: Mapping[str, Any]) -> JobResult | JobRunning:
    if body.get("status") == "running" and "success" not in body:
        return JobRunning.from_json(body)
    return JobResult.from_json(body)


def _unreachable(base_url: httpx.URL, error: httpx.HTTPError) -> ServerError:
    detail = str(error) or type(error).__name__
    if isinstance(error, httpx.TimeoutException):
        return ServerError(0, f"timed out talking to {base_url}: {detail}")
    return ServerError(0, f"cannot reach {base_url}: {detail}")


def _headers(token: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    headers.update(extra or {})
    return headers


def _resolve_token(token: str | None) -> str | None:
    return token if token is not None else os.environ.get("FUNTASK_AUTH_TOKEN")


class SSEDecoder:
    """Incremental decoder of a ``text/event-stream`` body into ``data`` payloads.

    Comment lines (``: keepalive``) and fields other than ``data`` and
    ``retry`` are ignored; `retry_ms` holds the last ``retry:`` value seen.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[str]:
        """Consume `chunk`; return the payloads of the events it completed."""
        self._buffer += chunk
        events: list[str] = []
        while True:
            match = re.search(rb"\r\n|\r|\n", self._buffer)
            if match is None:
                return events
            if match.group() == b"\r" and match.end() == len(self._buffer):
                return events  # a "\n" may follow in the next chunk
            line = self._buffer[: match.start()].decode("utf-8", "replace")
            self._buffer = self._buffer[match.end() :]
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                self._data.append(value)
            elif field == "retry" and value.isdigit():
                self.retry_ms = int(value)


def _fresh_decoder(previous: SSEDecoder) -> SSEDecoder:
    """A decoder for a new connection; the server's ``retry:`` outlives the connection."""
    decoder = SSEDecoder()
    decoder.retry_ms = previous.retry_ms
    return decoder


def _snapshot(payload: str) -> dict[str, Any]:
    document = _decode_object(payload.encode())
    if document is None:
        raise ServerError(200, "an event's data is not a JSON object", None)
    return document


# -- async client --------------------------------------------------------------


class EventStream:
    """Health snapshots from ``/events``, reconnecting when the connection drops.

    An async iterator of snapshot dicts (the same document as ``/health``).
    Use it as ``async with client.events() as events: async for snapshot in
    events: ...`` so the connection is closed when you stop reading
    (``aclose()`` does the same). A dropped or ended stream, a connection
    failure and a 503 (server draining or restarting) are retried after
    `retry_delay` seconds (or the server's ``retry:``); after `max_retries`
    failed attempts in a row the last error is raised (`ServerError` with
    status 0, or `ServerDraining`). ``max_retries=None`` retries forever.
    Other errors (401, ...) are raised at once.
    """

    def __init__(
        self,
        client: FuntaskClient,
        *,
        retry_delay: float = DEFAULT_RETRY_DELAY_S,
        max_retries: int | None = DEFAULT_MAX_RETRIES,
    ) -> None:
        self._client = client
        self._retry_delay = retry_delay
        self._max_retries = max_retries
        self._frames = self._stream()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return await self._frames.__anext__()

    async def aclose(self) -> None:
        """Close the connection; iteration ends."""
        await self._frames.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _stream(self) -> AsyncGenerator[dict[str, Any], None]:
        failures = 0
        decoder = SSEDecoder()
        http = self._client._http
        timeout = httpx.Timeout(self._client.timeout, read=None)
        while True:
            error: ClientError
            try:
                async with http.stream("GET", "/events", timeout=timeout) as response:
                    if not response.is_success:
                        await response.aread()
                        error = _error_for(response.status_code, response.content)
                        if not isinstance(error, ServerDraining):
                            raise error
                    else:
                        failures = 0
                        decoder = _fresh_decoder(decoder)
                        chunks = response.aiter_bytes()
                        try:
                            async for chunk in chunks:
                                for payload in decoder.feed(chunk):
                                    yield _snapshot(payload)
                        finally:
                            await chunks.aclose()  # type: ignore[attr-defined]
                        error = ServerError(0, "the event stream ended")
            except httpx.TransportError as transport_error:
                error = _unreachable(http.base_url, transport_error)
            failures += 1
            if self._max_retries is not None and failures > self._max_retries:
                raise error
            delay = decoder.retry_ms / 1000 if decoder.retry_ms is not None else self._retry_delay
            await anyio.sleep(delay)


class FuntaskClient:
    """An async client for one funtask server.

    `token` defaults to ``$FUNTASK_AUTH_TOKEN``. `timeout` (seconds) bounds
    connecting and every request but ``run``; ``run`` waits up to
    `run_timeout` for the answer (None: as long as the server holds the
    request, which its sync timeout bounds, 2 min by default). `transport`
    and `headers` go to the underlying `httpx.AsyncClient`. Use it as an
    async context manager, or call `aclose`.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        run_timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.run_timeout = run_timeout
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=_headers(_resolve_token(token), headers),
            timeout=timeout,
            follow_redirects=False,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"<FuntaskClient {self.base_url!r}>"

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _request(
        self, method: str, path: str, *, content: bytes | None = None, timeout: Any = None
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            return await self._http.request(
                method,
                path,
                content=content,
                headers=headers,
                timeout=timeout if timeout is not None else self.timeout,
            )
        except httpx.TransportError as error:
            raise _unreachable(self._http.base_url, error) from error

    @overload
    async def run(self, task: str, params: Params = None, job_id: None = None) -> JobResult: ...

    @overload
    async def run(self, task: str, params: Params, job_id: str) -> JobResult | JobRunning: ...

    @overload
    async def run(
        self, task: str, params: Params = None, *, job_id: str
    ) -> JobResult | JobRunning: ...

    async def run(
        self, task: str, params: Params = None, job_id: str | None = None
    ) -> JobResult | JobRunning:
        """Run `task` in sync mode and return its result once the job ends.

        A failed job is a `JobResult` with ``success`` False, not an
        exception. With a `job_id` that already has a stored result, that
        result comes back (the job does not run again); with the `job_id` of
        a job still running, a `JobRunning` does, so only calls passing a
        `job_id` need to handle it. Raises `TaskNotFound`, `TaskBusy` (another
        job is running), `InvalidRequest`, `Unauthorized`, `ServerDraining`,
        `SyncTimeout` (the job outlived the server's sync timeout and was
        cancelled) or `ServerError`; `TypeError`/`ValueError` for params JSON
        can't carry.
        """
        response = await self._request(
            "POST",
            _task_path("run", task),
            content=_run_body(params, job_id, None),
            timeout=httpx.Timeout(self.timeout, read=self.run_timeout),
        )
        return _run_answer(_check(response))

    async def start(
        self, task: str, params: Params, callback_url: str, job_id: str | None = None
    ) -> str:
        """Start `task` in async mode; its result goes to `callback_url`. Returns the jobId.

        Idempotent with a `job_id`: a job already running or finished under
        it is not started again, and its jobId comes back. The callback URL
        must be on the server's allowlist (else `InvalidRequest`). Raises as
        `run` does, except `SyncTimeout`.
        """
        response = await self._request(
            "POST", _task_path("run", task), content=_run_body(params, job_id, callback_url)
        )
        return _text(_check(response), "jobId")

    async def stop(self, task: str) -> StopOutcome:
        """Ask `task`'s running job to stop (does not wait for it). Raises `TaskNotFound`."""
        response = await self._request("POST", _task_path("stop", task))
        return StopOutcome.from_json(_check(response))

    async def result(self, job_id: str) -> JobResult:
        """The stored result of `job_id`. Raises `ResultNotFound` (unknown, running, or evicted)."""
        response = await self._request("GET", _task_path("result", job_id))
        return JobResult.from_json(_check(response, result_route=True))

    async def health(self) -> dict[str, Any]:
        """The health snapshot (server status, and every task's current job and results)."""
        return _check(await self._request("GET", "/health"))

    def events(
        self,
        *,
        retry_delay: float = DEFAULT_RETRY_DELAY_S,
        max_retries: int | None = DEFAULT_MAX_RETRIES,
    ) -> EventStream:
        """Health snapshots as the server pushes them (an `EventStream`; see there)."""
        return EventStream(self, retry_delay=retry_delay, max_retries=max_retries)


# -- blocking client -------------------------------------------------------------


class SyncFuntaskClient:
    """The blocking twin of `FuntaskClient`, for scripts and orchestrator operators.

    Same constructor and methods, same answers and exceptions; `events` is a
    generator (close it, or use ``contextlib.closing``, to drop the connection).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        run_timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.run_timeout = run_timeout
        self._http = httpx.Client(
            base_url=base_url,
            headers=_headers(_resolve_token(token), headers),
            timeout=timeout,
            follow_redirects=False,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"<SyncFuntaskClient {self.base_url!r}>"

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _request(
        self, method: str, path: str, *, content: bytes | None = None, timeout: Any = None
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            return self._http.request(
                method,
                path,
                content=content,
                headers=headers,
                timeout=timeout if timeout is not None else self.timeout,
            )
        except httpx.TransportError as error:
            raise _unreachable(self._http.base_url, error) from error

    @overload
    def run(self, task: str, params: Params = None, job_id: None = None) -> JobResult: ...

    @overload
    def run(self, task: str, params: Params, job_id: str) -> JobResult | JobRunning: ...

    @overload
    def run(self, task: str, params: Params = None, *, job_id: str) -> JobResult | JobRunning: ...

    def run(
        self, task: str, params: Params = None, job_id: str | None = None
    ) -> JobResult | JobRunning:
        """Run `task` in sync mode and return its result (see `FuntaskClient.run`)."""
        response = self._request(
            "POST",
            _task_path("run", task),
            content=_run_body(params, job_id, None),
            timeout=httpx.Timeout(self.timeout, read=self.run_timeout),
        )
        return _run_answer(_check(response))

    def start(self, task: str, params: Params, callback_url: str, job_id: str | None = None) -> str:
        """Start `task` in async mode; returns the jobId (see `FuntaskClient.start`)."""
        response = self._request(
            "POST", _task_path("run", task), content=_run_body(params, job_id, callback_url)
        )
        return _text(_check(response), "jobId")

    def stop(self, task: str) -> StopOutcome:
        """Ask `task`'s running job to stop (see `FuntaskClient.stop`)."""
        return StopOutcome.from_json(_check(self._request("POST", _task_path("stop", task))))

    def result(self, job_id: str) -> JobResult:
        """The stored result of `job_id`. Raises `ResultNotFound`."""
        response = self._request("GET", _task_path("result", job_id))
        return JobResult.from_json(_check(response, result_route=True))

    def health(self) -> dict[str, Any]:
        """The health snapshot."""
        return _check(self._request("GET", "/health"))

    def events(
        self,
        *,
        retry_delay: float = DEFAULT_RETRY_DELAY_S,
        max_retries: int | None = DEFAULT_MAX_RETRIES,
    ) -> Iterator[dict[str, Any]]:
        """Health snapshots as the server pushes them, reconnecting (see `EventStream`)."""
        failures = 0
        decoder = SSEDecoder()
        timeout = httpx.Timeout(self.timeout, read=None)
        while True:
            error: ClientError
            try:
                with self._http.stream("GET", "/events", timeout=timeout) as response:
                    if not response.is_success:
                        response.read()
                        error = _error_for(response.status_code, response.content)
                        if not isinstance(error, ServerDraining):
                            raise error
                    else:
                        failures = 0
                        decoder = _fresh_decoder(decoder)
                        for chunk in response.iter_bytes():
                            for payload in decoder.feed(chunk):
                                yield _snapshot(payload)
                        error = ServerError(0, "the event stream ended")
            except httpx.TransportError as transport_error:
                error = _unreachable(self._http.base_url, transport_error)
            failures += 1
            if max_retries is not None and failures > max_retries:
                raise error
            time.sleep(decoder.retry_ms / 1000 if decoder.retry_ms is not None else retry_delay)
