"""`Server`: configuration, task registration, the ASGI entry point and its lifetime.

A server is an ASGI application. Each ASGI lifespan (one per ``hypercorn``
worker, one per `Server.serve`) opens a `Serving`: the jobs and deliveries
nurseries, the change feed, the pooled callback client and the Quart-Trio
app. Shutdown is "cancel, then drain with a deadline": `Serving.shutdown`.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
import math
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar, overload

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from ._callbacks import Allowlist, CallbackSender, _secret_key
from ._deadletters import DeadLetter, DeadLetterDir
from ._events import ChangeFeed, SnapshotCache, sse_frames
from ._exceptions import ConfigError
from ._health import serialize, snapshot
from ._jobs import Job, JobManager, TaskDef, TaskFunction
from ._result import JobResult
from ._routes import BUILTIN_PREFIXES, build_app

logger = logging.getLogger("funtask_trio")

DEFAULT_MAX_BODY_SIZE: Final = 1024 * 1024
SSE_MIN_INTERVAL_S: Final = 0.02
SSE_PROGRESS_INTERVAL_S: Final = 0.2
REPLAY_CONCURRENCY: Final = 8
WATCHDOG_MARGIN_S: Final = 5.0

F = TypeVar("F", bound=TaskFunction)
V = TypeVar("V", bound=Callable[..., Any])


class Server:
    """A named set of tasks served over HTTP with the funtask protocol.

    A server is itself an ASGI application (``hypercorn --worker-class trio
    module:server``); `serve` and `run` serve it with the full graceful
    shutdown sequence. Durations are in seconds. The configuration is
    checked when serving starts: `ConfigError` lists every problem at once.
    """

    def __init__(
        self,
        name: str,
        *,
        auth_token: str | None = None,
        dead_letter_dir: str | os.PathLike[str] | None = None,
        dashboard: bool = False,
        max_duration: float | None = None,
        sync_timeout: float = 120,
        shutdown_timeout: float = 30,
        callback_allowlist: Iterable[str] = (),
        callback_retries: int = 5,
        callback_timeout: float = 30,
        callback_secret: str | None = None,
        result_history: int = 10,
        readiness: Callable[[], Any] | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        sse_keepalive: float = 30,
    ) -> None:
        self.name = name
        self.auth_token = (
            auth_token if auth_token is not None else os.environ.get("FUNTASK_AUTH_TOKEN")
        )
        if dead_letter_dir is None:
            dead_letter_dir = os.environ.get("FUNTASK_DEAD_LETTER_DIR") or None
        self.dead_letter_dir: Path | None = Path(dead_letter_dir) if dead_letter_dir else None
        self.dashboard = dashboard
        self.max_duration = max_duration
        self.sync_timeout = sync_timeout
        self.shutdown_timeout = shutdown_timeout
        self.callback_allowlist = list(callback_allowlist)
        self.callback_retries = callback_retries
        self.callback_timeout = callback_timeout
        self.callback_secret = callback_secret
        self.result_history = result_history
        self.readiness = readiness
        self.max_body_size = max_body_size
        self.sse_keepalive = sse_keepalive
        self._tasks: dict[str, TaskDef] = {}
        self._custom_routes: list[tuple[str, tuple[str, ...], Callable[..., Any]]] = []
        self._serving: Serving | None = None
        self._exit_watchdog = False
        self._stop_requested: trio.Event | None = None

    def __repr__(self) -> str:
        return f"<funtask_trio.Server {self.name!r} tasks={sorted(self._tasks)}>"

    # -- registration ------------------------------------------------------

    @property
    def tasks(self) -> Mapping[str, TaskDef]:
        """The registered tasks by name (read-only view)."""
        return dict(self._tasks)

    @overload
    def task(self, name: F, /) -> F: ...

    @overload
    def task(
        self,
        name: str | None = None,
        /,
        *,
        description: str | None = None,
        example: Mapping[str, Any] | None = None,
        keep_results: int | None = None,
    ) -> Callable[[F], F]: ...

    def task(
        self,
        name: str | F | None = None,
        /,
        *,
        description: str | None = None,
        example: Mapping[str, Any] | None = None,
        keep_results: int | None = None,
    ) -> F | Callable[[F], F]:
        """Register ``async def fn(run, params) -> Result`` as a task.

        `name` defaults to the function's ``__name__``; registering a name
        again replaces the earlier task. `example` pre-fills the dashboard's
        params editor; `keep_results` overrides `result_history` for this task.
        Usable bare (``@server.task``) or called (``@server.task("name", ...)``).
        """
        if callable(name):
            return self.task()(name)

        def register(fn: F) -> F:
            is_async = inspect.iscoroutinefunction(fn)
            if not is_async:
                raise TypeError(f"task {fn!r} must be an async function: async def fn(run, params)")
            task_name = name or getattr(fn, "__name__", "")
            if not task_name:
                raise TypeError(f"task {fn!r} has no __name__: pass a name")
            self._tasks[task_name] = TaskDef(
                task_name,
                fn,
                description=description,
                example=dict(example) if example is not None else None,
                keep_results=keep_results,
            )
            return fn

        return register

    def route(self, path: str, methods: Iterable[str] = ("GET",)) -> Callable[[V], V]:
        """Register a custom, unauthenticated Quart view at `path` (Quart path syntax).

        A path inside a built-in route is a `ConfigError` when serving starts.
        """

        def register(view: V) -> V:
            self._custom_routes.append((path, tuple(method.upper() for method in methods), view))
            return view

        return register

    # -- configuration -----------------------------------------------------

    def _config_problems(self) -> list[str]:
        problems = []
        if not self._tasks:
            problems.append("no tasks registered (use @server.task)")
        if not self.auth_token:
            problems.append("no auth token (pass auth_token= or set FUNTASK_AUTH_TOKEN)")
        if self.dead_letter_dir is None:
            problems.append(
                "no dead-letter directory (pass dead_letter_dir= or set FUNTASK_DEAD_LETTER_DIR)"
            )
        else:
            problem = DeadLetterDir(self.dead_letter_dir).ensure()
            if problem:
                problems.append(problem)
        for path, _, _ in self._custom_routes:
            if any(path == prefix or path.startswith(prefix + "/") for prefix in BUILTIN_PREFIXES):
                problems.append(f"custom route {path!r} collides with a built-in route")
        problems += Allowlist(self.callback_allowlist).problems
        if self.callback_secret is not None:
            try:
                _secret_key(self.callback_secret)
            except ValueError as error:
                problems.append(str(error))
        positive = {
            "sync_timeout": self.sync_timeout,
            "callback_timeout": self.callback_timeout,
            "callback_retries": self.callback_retries,
            "result_history": self.result_history,
            "max_body_size": self.max_body_size,
            "sse_keepalive": self.sse_keepalive,
        }
        if self.max_duration is not None:
            positive["max_duration"] = self.max_duration
        for option, value in positive.items():
            if not isinstance(value, int | float) or not value > 0 or math.isnan(value):
                problems.append(f"{option} must be a positive number, not {value!r}")
        if not isinstance(self.shutdown_timeout, int | float) or not self.shutdown_timeout >= 0:
            problems.append(f"shutdown_timeout must be >= 0, not {self.shutdown_timeout!r}")
        for task in self._tasks.values():
            if task.keep_results is not None and not task.keep_results >= 1:
                problems.append(f"task {task.name!r}: keep_results must be >= 1")
        return problems

    def check_config(self) -> None:
        """Raise `ConfigError` listing every configuration problem (creates the dead-letter dir)."""
        problems = self._config_problems()
        if problems:
            raise ConfigError(problems)

    # -- ASGI --------------------------------------------------------------

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        serving = self._serving
        if serving is None:
            await _asgi_not_started(scope, receive, send)
            return
        await serving.app(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        await receive()  # lifespan.startup
        try:
            serving_cm = self._open_serving()
            await serving_cm.__aenter__()
        except Exception as error:  # the ASGI server reports it and stops
            logger.error("%s", error)
            if _hypercorn_shutdown_event() is not None:
                _fail_hypercorn_supervisor()
            await send({"type": "lifespan.startup.failed", "message": str(error)})
            return
        await send({"type": "lifespan.startup.complete"})
        try:
            assert self._serving is not None
            _watch_hypercorn_supervisor(self._serving)
            await receive()  # lifespan.shutdown
        finally:
            await serving_cm.__aexit__(None, None, None)
        await send({"type": "lifespan.shutdown.complete"})

    @contextlib.asynccontextmanager
    async def _open_serving(self) -> AsyncIterator[Serving]:
        self.check_config()
        serving = Serving(self)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        async with (
            httpx.AsyncClient(
                follow_redirects=False, timeout=self.callback_timeout, limits=limits
            ) as client,
            trio.open_nursery() as nursery,
        ):
            serving.sender = CallbackSender(
                client,
                attempts=self.callback_retries,
                timeout_s=self.callback_timeout,
                secret=self.callback_secret,
                draining=serving.draining,
            )
            serving.background = nursery
            await nursery.start(serving.jobs.run)
            # Listed before the first request is served: a letter written by one of
            # this run's own jobs must never be replayed beside that job's delivery.
            await nursery.start(serving.replay_dead_letters)
            self._serving = serving
            logger.info("funtask server %r serving tasks %s", self.name, sorted(self._tasks))
            try:
                yield serving
            finally:
                # The drain must finish even when serving is cancelled from outside.
                budget = self.shutdown_timeout + self.callback_timeout + 1
                with trio.CancelScope(shield=True, deadline=trio.current_time() + budget):
                    await serving.shutdown()
                nursery.cancel_scope.cancel()
                self._serving = None

    # -- serving -----------------------------------------------------------

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        handle_signals: bool = True,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve on `host`:`port` until cancelled or until SIGINT/SIGTERM, then drain.

        On a signal: draining (``/run``, ``/readyz``, ``/events`` answer 503),
        running jobs cancelled, up to `shutdown_timeout` for them and their
        deliveries, ``worker_shutdown`` for the rest, then the listener
        closes. `request_shutdown` starts the same sequence without a signal;
        ``handle_signals=False`` leaves signals alone (tests, embedding).
        `task_status` receives the bound URLs (port 0 picks a free port).
        Raises `ConfigError` before binding when the configuration is unusable.
        """
        self.check_config()
        config = HypercornConfig()
        listener = _listening_socket(host, port, user_timeout_s=self.shutdown_timeout + 1)
        config.bind = [f"fd://{listener.detach()}"]
        config.graceful_timeout = max(float(self.shutdown_timeout), 1.0)
        # hypercorn's own limit on lifespan shutdown must not cut our drain short.
        config.shutdown_timeout = self.shutdown_timeout + self.callback_timeout + 10
        config.accesslog = None
        stop_requested = self._stop_requested = trio.Event()

        async def shutdown_trigger() -> None:
            await stop_requested.wait()
            serving = self._serving
            if serving is not None:
                await serving.shutdown()

        async with trio.open_nursery() as nursery:
            if handle_signals and threading.current_thread() is threading.main_thread():
                nursery.start_soon(self._watch_signals)

            async def run_hypercorn(task_status: trio.TaskStatus[list[str]]) -> None:
                await hypercorn_serve(
                    self, config, shutdown_trigger=shutdown_trigger, task_status=task_status
                )
                nursery.cancel_scope.cancel()

            binds = await nursery.start(run_hypercorn)
            task_status.started(binds)

    def request_shutdown(self) -> None:
        """Start the graceful shutdown of a running `serve`, as SIGTERM would."""
        if self._stop_requested is not None:
            self._stop_requested.set()
        serving = self._serving
        if serving is not None:
            serving.begin_drain()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                logger.info("received %s: draining", signal.Signals(signum).name)
                if self._exit_watchdog:
                    _start_exit_watchdog(self.shutdown_timeout + WATCHDOG_MARGIN_S)
                self.request_shutdown()

    def run(self, host: str = "127.0.0.1", port: int = 8080) -> None:
        """Serve until SIGINT/SIGTERM (blocking ``trio.run`` around `serve`).

        Configures basic logging when the application has none. Should the
        drain hang (a job blocking the event loop, a peer not reading), the
        process exits `shutdown_timeout` plus a margin after the signal.
        """
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        self._own_process()
        trio.run(partial(self.serve, host, port))

    def _own_process(self) -> None:
        """Settings for a process that exists to serve (`run`, ``funtask-trio serve``)."""
        # Fewer, larger young-generation collections: Python's GC makes the latency
        # tail; p99 of sync runs at 16 connections went from 28.6 to 14.1 ms.
        gc.set_threshold(20_000, 20, 100)
        self._exit_watchdog = True


class Serving:
    """One serving lifetime of a `Server`: its jobs, deliveries, live feed and HTTP app."""

    sender: CallbackSender
    background: trio.Nursery

    def __init__(self, server: Server) -> None:
        assert server.dead_letter_dir is not None
        self.server = server
        self.feed = ChangeFeed()
        self.draining = trio.Event()
        self.allowlist = Allowlist(server.callback_allowlist)
        self.dead_letters = DeadLetterDir(server.dead_letter_dir)
        self.jobs = JobManager(
            server._tasks,
            result_history=server.result_history,
            max_duration=server.max_duration,
            feed=self.feed,
            deliver=self._deliver,
        )
        self.started_at = trio.current_time()
        self._cache = SnapshotCache(self.feed, self.snapshot_body)
        self._shutdown_started = False
        self._shut_down = trio.Event()
        self.app = build_app(self)

    # -- live view -----------------------------------------------------------

    def snapshot_body(self) -> bytes:
        return serialize(
            snapshot(
                self.server.name,
                draining=self.draining.is_set(),
                uptime_s=trio.current_time() - self.started_at,
                slots=self.jobs.slots,
            )
        )

    def sse_stream(self) -> AsyncIterator[bytes]:
        return sse_frames(
            self.feed,
            self._cache,
            keepalive_s=self.server.sse_keepalive,
            min_interval_s=SSE_MIN_INTERVAL_S,
            progress_interval_s=SSE_PROGRESS_INTERVAL_S,
        )

    # -- delivery ------------------------------------------------------------

    async def _deliver(self, job: Job, result: JobResult, *, final: bool) -> None:
        if job.callback_url is None:
            # A sync job given up on at shutdown: its caller may be gone, so keep the result.
            await self._keep_letter(job, result)
            return
        await self.deliver_letter(
            job.job_id, job.task.name, job.callback_url, result.body, final=final, write=True
        )

    async def _keep_letter(self, job: Job, result: JobResult) -> None:
        log_extra = {"task": job.task.name, "job_id": job.job_id}
        try:
            await self.dead_letters.write(job.job_id, result.body, None, job.task.name)
        except (OSError, ValueError) as error:  # ValueError: a jobId that names no file
            logger.error(
                "task %s job %s: worker_shutdown result could not be written (%s)",
                job.task.name,
                job.job_id,
                error,
                extra=log_extra,
            )

    async def deliver_letter(
        self, job_id: str, task: str, url: str, body: bytes, *, final: bool, write: bool
    ) -> bool:
        """Dead letter first (when `write`), then deliver; remove the letter after a 2xx."""
        log_extra = {"task": task, "job_id": job_id}
        if write:
            try:
                await self.dead_letters.write(job_id, body, url, task)
            except (OSError, ValueError) as error:
                logger.error(
                    "task %s job %s: dead letter could not be written (%s); no callback"
                    " attempted, result kept for /result",
                    task,
                    job_id,
                    error,
                    extra=log_extra,
                )
                return False
        delivered = await self.sender.deliver(
            job_id, task, url, body, final=final or self.draining.is_set()
        )
        if delivered:
            try:
                await self.dead_letters.remove(job_id, only_if=None if write else body)
            except OSError as error:
                logger.warning(
                    "task %s job %s: delivered, but the dead letter could not be removed: %s",
                    task,
                    job_id,
                    error,
                    extra=log_extra,
                )
        return delivered

    async def replay_dead_letters(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Redeliver every letter left by an earlier run, in the background, full schedule.

        Started (`task_status`) once the directory is listed.
        """
        letters = await trio.to_thread.run_sync(self.dead_letters.pending)
        task_status.started()
        replayable = []
        for letter in letters:
            if not letter.callback_url:
                continue
            if not self.allowlist.allows(letter.callback_url):
                # The allowlist may have shrunk since: never send where it no longer allows.
                logger.warning(
                    "dead letter %s: callback URL no longer allowed; kept, not replayed",
                    letter.job_id,
                    extra={"task": letter.task, "job_id": letter.job_id},
                )
                continue
            replayable.append(letter)
        if not replayable:
            return
        logger.info("replaying %d pending dead letter(s)", len(replayable))
        limiter = trio.CapacityLimiter(REPLAY_CONCURRENCY)

        async def replay(letter: DeadLetter) -> None:
            async with limiter:
                assert letter.callback_url is not None
                await self.deliver_letter(
                    letter.job_id,
                    letter.task or "?",
                    letter.callback_url,
                    letter.body,
                    final=False,
                    write=False,
                )

        async with trio.open_nursery() as nursery:
            for letter in replayable:
                nursery.start_soon(replay, letter)

    # -- shutdown ------------------------------------------------------------

    def begin_drain(self) -> None:
        """Enter draining: new runs, readiness and event streams are refused from now on."""
        if self.draining.is_set():
            return
        self.draining.set()
        self.feed.close()
        self.jobs.begin_drain()

    async def shutdown(self) -> None:
        """Drain: cancel jobs, wait up to the shutdown timeout, give up on the rest. Idempotent."""
        if self._shutdown_started:
            await self._shut_down.wait()
            return
        self._shutdown_started = True
        self.begin_drain()
        try:
            clean = await self.jobs.drain(self.server.shutdown_timeout)
            logger.info("drained %s", "cleanly" if clean else "after the shutdown timeout")
        finally:
            self.jobs.cancel_all()
            self._shut_down.set()


async def _asgi_not_started(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b'{"error":"server is not started"}\n'
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _listening_socket(host: str, port: int, *, user_timeout_s: float) -> socket.socket:
    """A bound listening socket whose connections give up on a peer that stops reading.

    hypercorn writes to a socket inside a shielded scope, so a client that
    stops reading an event stream would hold shutdown forever; the kernel's
    TCP_USER_TIMEOUT (inherited by accepted sockets) breaks such a connection.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(user_timeout_s * 1000))
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def _start_exit_watchdog(after_s: float) -> None:
    """Last resort for a process we own: exit if the drain has not let it end by then."""

    def watchdog() -> None:
        time.sleep(after_s)
        logger.error("shutdown still blocked %.0fs after the signal: exiting", after_s)
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=watchdog, name="funtask-exit-watchdog", daemon=True).start()


def _hypercorn_shutdown_event() -> Any:
    """The event hypercorn's supervisor sets to stop its workers, when we run in one."""
    kwargs = getattr(multiprocessing.current_process(), "_kwargs", None)
    event = kwargs.get("shutdown_event") if isinstance(kwargs, dict) else None
    return event if hasattr(event, "is_set") else None


def _fail_hypercorn_supervisor() -> None:
    """Make ``hypercorn`` exit non-zero when this worker cannot start.

    hypercorn 0.18's supervisor records a failed worker's exit code and then
    overwrites it with 0 (upstream issue #269, PR #372), so systemd or a
    container runtime would read a configuration error as a clean stop. The
    supervisor does nothing but wait for this worker, so ending it is safe.
    """
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None:
        logger.error("stopping hypercorn (pid %d) so that it exits non-zero", parent.pid)
        os.kill(parent.pid, signal.SIGKILL)


def _watch_hypercorn_supervisor(serving: Serving) -> None:
    """Under ``hypercorn --workers N``, begin draining as soon as the supervisor is told to stop.

    hypercorn's worker only learns of a SIGTERM through a multiprocessing
    event that it polls, and tells the app last (after waiting for open
    requests). Polling the same event lets jobs be cancelled and results
    flushed right away. Outside a hypercorn worker this returns at once.
    """
    shutdown_event = _hypercorn_shutdown_event()
    if shutdown_event is None:
        return

    async def poll() -> None:
        # hypercorn leaves SIGTERM at its default in workers, so a SIGTERM sent to the
        # whole process group (systemd's default KillMode=control-group, kill -- -PGID)
        # would kill this worker on the spot with results unflushed: it counts as the
        # supervisor's word. Held until serving ends, so a second one cannot kill either.
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async with trio.open_nursery() as waiting:

                async def supervisor_says_stop() -> None:
                    # A multiprocessing event: polled, as hypercorn itself does.
                    while not shutdown_event.is_set():  # noqa: ASYNC110
                        await trio.sleep(0.1)
                    waiting.cancel_scope.cancel()

                async def signalled() -> None:
                    async for _ in signals:
                        waiting.cancel_scope.cancel()

                waiting.start_soon(supervisor_says_stop)
                waiting.start_soon(signalled)
            logger.info("hypercorn is shutting down: draining")
            _start_exit_watchdog(serving.server.shutdown_timeout + WATCHDOG_MARGIN_S)
            await serving.shutdown()
            await trio.sleep_forever()

    serving.background.start_soon(poll)
