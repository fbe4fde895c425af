"""Helpers for testing tasks and servers under pytest-trio.

- `make_run` / `make_params` / `make_params_raw` / `run_task`: call a task
  function directly, with steps recorded and cancellation under your control.
- `running_server`: serve a `Server` on a real loopback port for the length
  of an ``async with`` block.
- `CallbackReceiver` / `open_callback_receiver`: a real local HTTP endpoint
  that records callbacks and can be told to fail.

The pytest plugin (`funtask_trio._pytest_plugin`) builds its fixtures from these.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import secrets
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h11
import httpx
import trio

from ._jobs import TaskFunction, execute
from ._params import Params
from ._result import Result
from ._run import Run
from ._server import Server

if TYPE_CHECKING:
    from .client import FuntaskClient

__all__ = [
    "CallbackReceiver",
    "ReceivedCallback",
    "RecordingRun",
    "RunningServer",
    "configured_for_testing",
    "make_params",
    "make_params_raw",
    "make_run",
    "open_callback_receiver",
    "run_task",
    "running_server",
]

StepMatch = str | Callable[[str], bool] | None


def _step_matches(match: StepMatch, step: str) -> bool:
    if match is None:
        return True
    if isinstance(match, str):
        return step == match
    return bool(match(step))


class RecordingRun(Run):
    """A `Run` for tests: records every step and lets the test wait for one.

    Made by `make_run`. ``run.cancel()`` stops the job as ``/stop`` does once
    it runs under `run_task` (cancelling before the job starts stops it at
    its first checkpoint). A run can execute one job only.
    """

    __slots__ = ("_step_reported", "_finished")

    def __init__(self, job_id: str, task: str) -> None:
        super().__init__(job_id, task, record_steps=True, on_change=self._notify_step)
        self._step_reported: trio.Event | None = None
        self._finished = False

    def _notify_step(self) -> None:
        if self._step_reported is not None:
            self._step_reported.set()
            self._step_reported = None

    def _mark_finished(self) -> None:
        self._finished = True
        self._notify_step()

    async def wait_for_step(self, match: StepMatch = None) -> str:
        """Wait until the job has reported a step equal to `match` and return it.

        `match` is the exact step text, a predicate on the text, or None for
        any step; steps reported before the call count too. Raises
        `RuntimeError` when the job (run by `run_task`) ends without such a
        step, so a test fails instead of hanging.
        """
        while True:
            for step in self.steps:
                if _step_matches(match, step):
                    return step
            if self._finished:
                raise RuntimeError(
                    f"job {self.job_id} ended without a step matching {match!r};"
                    f" steps: {list(self.steps)!r}"
                )
            if self._step_reported is None:
                self._step_reported = trio.Event()
            await self._step_reported.wait()


def make_run(job_id: str | None = None, task: str = "test") -> RecordingRun:
    """A `Run` not attached to any server, recording every step in ``run.steps``.

    ``run.cancel()`` cancels it as ``/stop`` would (when the task runs under
    `run_task`); ``await run.wait_for_step(...)`` waits for a reported step.
    `job_id` defaults to a random UUID.
    """
    return RecordingRun(job_id or str(uuid.uuid4()), task)


def _check_json(value: Any, path: str) -> None:
    if value is None or isinstance(value, bool | str | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"params{path}: {value!r} is not representable in JSON")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"params{path}: key {key!r} is not a string")
            _check_json(item, f"{path}[{key!r}]")
        return
    raise ValueError(f"params{path}: {type(value).__name__} is not representable in JSON")


def make_params(mapping: Mapping[str, Any] | None = None) -> Params:
    """`Params` as a request would carry them; raises `ValueError` for values JSON can't hold.

    Values go through a JSON round trip, so tuples become lists as they would
    on the wire. Refused: NaN and infinities, non-string keys, and any object
    that is not None, bool, int, float, str, list, tuple or a mapping.
    """
    mapping = dict(mapping or {})
    _check_json(mapping, "")
    return Params(json.loads(json.dumps(mapping)))


def make_params_raw(mapping: Mapping[str, Any] | None = None) -> Params:
    """`Params` holding `mapping` as is, unchecked: for testing validation of bad input."""
    return Params(dict(mapping or {}))


async def run_task(
    fn: TaskFunction,
    params: Params | Mapping[str, Any] | None = None,
    *,
    run: Run | None = None,
    max_duration: float | None = None,
    cancel_at_step: StepMatch = None,
) -> Result:
    """Run a task function exactly as the server would, and return its `Result`.

    Exceptions and cancellation become results as on a server (``panic``,
    ``invalid_params``, ``cancelled`` with the run's reason, ...). A mapping
    for `params` goes through `make_params`. `cancel_at_step` (a step text or
    predicate, see `RecordingRun.wait_for_step`) stops the job as ``/stop``
    would once it reports a matching step. `max_duration` is in seconds.
    """
    if not isinstance(params, Params):
        params = make_params(params)
    if run is None:
        run = make_run()
    if cancel_at_step is None:
        try:
            return await execute(fn, run, params, max_duration=max_duration)
        finally:
            if isinstance(run, RecordingRun):
                run._mark_finished()
    if not isinstance(run, RecordingRun):
        raise TypeError("cancel_at_step needs a run made by make_run()")
    recording = run

    async def cancel_when_reached() -> None:
        with contextlib.suppress(RuntimeError):  # ended first: nothing to cancel
            await recording.wait_for_step(cancel_at_step)
            recording.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_when_reached)
        try:
            return await execute(fn, recording, params, max_duration=max_duration)
        finally:
            recording._mark_finished()


# -- serving a server ----------------------------------------------------------


@dataclasses.dataclass
class RunningServer:
    """A server serving on a loopback port: its `url`, `token` and a way to stop it."""

    server: Server
    url: str
    token: str

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An httpx client for `url`, sending the bearer token (keyword args go to httpx)."""
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 30)
        return httpx.AsyncClient(base_url=self.url, headers=headers, **kwargs)

    def funtask_client(self, **kwargs: Any) -> FuntaskClient:
        """A `funtask_trio.client.FuntaskClient` for `url` with the token."""
        from .client import FuntaskClient

        return FuntaskClient(self.url, self.token, **kwargs)

    def request_shutdown(self) -> None:
        """Begin the graceful shutdown, as SIGTERM would."""
        self.server.request_shutdown()


@contextlib.asynccontextmanager
async def running_server(
    server: Server, *, host: str = "127.0.0.1"
) -> AsyncIterator[RunningServer]:
    """Serve `server` through hypercorn on a free port of `host` inside the block.

    Leaving the block shuts the server down gracefully (jobs cancelled,
    results flushed). Signals are left alone. Raises `ConfigError` when the
    server's configuration is unusable (see `configured_for_testing`).
    """
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(server.serve, host, 0, handle_signals=False))
        assert server.auth_token is not None
        try:
            yield RunningServer(server, binds[0], server.auth_token)
        finally:
            server.request_shutdown()


@contextlib.contextmanager
def configured_for_testing(
    server: Server,
    *,
    dead_letter_dir: str | os.PathLike[str],
    allow_callbacks_to: Iterable[str] = (),
) -> Iterator[Server]:
    """Fill in what a server needs to serve in a test, and restore it afterwards.

    A server without a token gets a random one; one without a dead-letter
    directory gets `dead_letter_dir`; the origins in `allow_callbacks_to`
    are added to its callback allowlist. The server object itself is
    changed (it is usually a module-level object) for the length of the block.
    """
    saved = (server.auth_token, server.dead_letter_dir, server.callback_allowlist)
    try:
        if not server.auth_token:
            server.auth_token = "test-" + secrets.token_urlsafe(16)
        if server.dead_letter_dir is None:
            server.dead_letter_dir = Path(dead_letter_dir)
        server.callback_allowlist = [*server.callback_allowlist, *allow_callbacks_to]
        yield server
    finally:
        server.auth_token, server.dead_letter_dir, server.callback_allowlist = saved


# -- callback receiver ---------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ReceivedCallback:
    """One request the `CallbackReceiver` got, and what it answered."""

    method: str
    path: str
    headers: Mapping[str, str]
    """Request headers, names lower-cased (repeated headers joined with ``, ``)."""
    body: bytes
    """The exact bytes received (what ``ft.verify_callback`` checks)."""
    status: int
    """The status the receiver answered."""
    json: Any
    """The body parsed as JSON, or None when it is not JSON."""

    @property
    def job_id(self) -> str | None:
        """The ``jobId`` of the result in the body, if any."""
        if isinstance(self.json, dict):
            job_id = self.json.get("jobId")
            if isinstance(job_id, str):
                return job_id
        return None

    @property
    def accepted(self) -> bool:
        """True when the receiver answered 2xx, i.e. the callback was delivered."""
        return 200 <= self.status < 300


@dataclasses.dataclass(frozen=True, slots=True)
class _PlannedFailure:
    status: int
    retry_after: str | None


class CallbackReceiver:
    """A real local HTTP endpoint for callbacks: records every request, fails on demand.

    Serve it with ``await nursery.start(receiver.serve)`` or use
    `open_callback_receiver`. Every request (any method, any path) is
    recorded in `received` and answered ``200`` unless `fail_next` planned a
    failure for it. `url` is the address to give as ``callbackUrl``;
    `origin` is the entry to put in a server's ``callback_allowlist``.
    """

    def __init__(self, *, host: str = "127.0.0.1", path: str = "/callback") -> None:
        self.host = host
        self.path = path
        self.received: list[ReceivedCallback] = []
        self._failures: deque[_PlannedFailure] = deque()
        self._changed = trio.Event()
        self._port: int | None = None

    @property
    def origin(self) -> str:
        """``http://host:port``; raises `RuntimeError` before the receiver serves."""
        if self._port is None:
            raise RuntimeError("the callback receiver is not serving yet")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    @property
    def url(self) -> str:
        """The callback URL (``origin`` plus ``path``)."""
        return self.origin + self.path

    def fail_next(
        self, count: int = 1, *, status: int = 500, retry_after: float | str | None = None
    ) -> None:
        """Answer the next `count` requests with `status` instead of 200.

        `retry_after` (seconds, or an HTTP date string) adds a ``Retry-After``
        header: with 503 or 429 the server waits that long instead of its
        schedule, so ``retry_after=0`` makes retries instant in tests.
        Failures planned by several calls are used in order.
        """
        if count < 0:
            raise ValueError("count must be >= 0")
        header = None
        if retry_after is not None:
            header = retry_after if isinstance(retry_after, str) else str(int(retry_after))
        self._failures.extend(_PlannedFailure(status, header) for _ in range(count))

    def callbacks_for(self, job_id: str) -> list[ReceivedCallback]:
        """Every request received for `job_id`, in order (failed attempts included)."""
        return [callback for callback in self.received if callback.job_id == job_id]

    async def wait_for(
        self, job_id: str, *, accepted: bool = True, timeout: float = 10.0
    ) -> ReceivedCallback:
        """Wait for a callback carrying `job_id` and return it.

        With `accepted` (the default) only a delivered callback counts (one
        the receiver answered 2xx); with ``accepted=False`` the first attempt
        does, whatever the answer. Callbacks received earlier count too.
        Raises `TimeoutError` after `timeout` seconds, listing what arrived.
        """
        with trio.move_on_after(timeout):
            while True:
                for callback in self.received:
                    if callback.job_id == job_id and (callback.accepted or not accepted):
                        return callback
                await self._changed.wait()
        seen = [(callback.job_id, callback.status) for callback in self.received]
        raise TimeoutError(
            f"no {'accepted ' if accepted else ''}callback for job {job_id!r} within"
            f" {timeout}s; received (jobId, status): {seen!r}"
        )

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on a free port of `host` until cancelled; `task_status` gets the URL."""
        listeners = await trio.open_tcp_listeners(0, host=self.host)
        sockname = listeners[0].socket.getsockname()
        self._port = int(sockname[1])
        task_status.started(self.url)
        await trio.serve_listeners(self._handle_connection, listeners)

    def _record(self, callback: ReceivedCallback) -> None:
        self.received.append(callback)
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def _answer(self) -> tuple[int, list[tuple[str, str]], bytes]:
        if self._failures:
            failure = self._failures.popleft()
            headers = [("Content-Type", "application/json")]
            if failure.retry_after is not None:
                headers.append(("Retry-After", failure.retry_after))
            return failure.status, headers, b'{"error":"planned failure"}'
        return 200, [("Content-Type", "application/json")], b'{"status":"ok"}'

    async def _handle_connection(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER)

        async def next_event() -> Any:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await stream.receive_some(65536))
                    continue
                return event

        async def send(*events: Any) -> None:
            for event in events:
                data = connection.send(event)
                if data:
                    await stream.send_all(data)

        try:
            while True:
                request = await next_event()
                if not isinstance(request, h11.Request):
                    return  # ConnectionClosed, or PAUSED after a protocol switch
                chunks = []
                while True:
                    event = await next_event()
                    if isinstance(event, h11.Data):
                        chunks.append(bytes(event.data))
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return
                body = b"".join(chunks)
                status, headers, answer = self._answer()
                request_headers: dict[str, str] = {}
                for name, value in request.headers:
                    key = name.decode("latin-1").lower()
                    text = value.decode("latin-1")
                    request_headers[key] = (
                        f"{request_headers[key]}, {text}" if key in request_headers else text
                    )
                try:
                    document: Any = json.loads(body)
                except ValueError:
                    document = None
                self._record(
                    ReceivedCallback(
                        method=request.method.decode("ascii", "replace"),
                        path=request.target.decode("ascii", "replace"),
                        headers=request_headers,
                        body=body,
                        status=status,
                        json=document,
                    )
                )
                headers.append(("Content-Length", str(len(answer))))
                await send(
                    h11.Response(status_code=status, headers=headers),
                    h11.Data(data=answer),
                    h11.EndOfMessage(),
                )
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    return
                connection.start_next_cycle()
        except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 1):
                await stream.aclose()


@contextlib.asynccontextmanager
async def open_callback_receiver(
    *, host: str = "127.0.0.1", path: str = "/callback"
) -> AsyncIterator[CallbackReceiver]:
    """A `CallbackReceiver` serving for the length of the ``async with`` block."""
    receiver = CallbackReceiver(host=host, path=path)
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.serve)
        try:
            yield receiver
        finally:
            nursery.cancel_scope.cancel()
