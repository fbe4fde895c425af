"""Helpers for testing tasks and servers under pytest-trio.

- `make_run` / `make_params` / `make_params_raw` / `run_task`: call a task
  function directly, with steps recorded and cancellation under your control.
- `running_server`: serve a `Server` on a real loopback port for the length
  of an ``async with`` block.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import uuid
from collections.abc import AsyncIterator, Mapping
from functools import partial
from typing import Any

import httpx
import trio

from ._jobs import TaskFunction, execute
from ._params import Params
from ._result import Result
from ._run import Run
from ._server import Server

__all__ = [
    "RunningServer",
    "make_params",
    "make_params_raw",
    "make_run",
    "run_task",
    "running_server",
]


def make_run(job_id: str | None = None, task: str = "test") -> Run:
    """A `Run` not attached to any server, recording every step in ``run.steps``.

    ``run.cancel()`` cancels it as ``/stop`` would (when the task runs under
    `run_task`).
    """
    return Run(job_id or str(uuid.uuid4()), task, record_steps=True)


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

    Values go through a JSON round trip, so tuples become lists as they would on the wire.
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
) -> Result:
    """Run a task function exactly as the server would, and return its `Result`.

    Exceptions and cancellation become results as on a server (``panic``,
    ``invalid_params``, ``cancelled`` with the run's reason, ...).
    """
    if not isinstance(params, Params):
        params = make_params(params)
    return await execute(fn, run or make_run(), params, max_duration=max_duration)


@dataclasses.dataclass
class RunningServer:
    """A server serving on a loopback port: its `url`, `token` and a way to stop it."""

    server: Server
    url: str
    token: str

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An httpx client for `url`, sending the bearer token."""
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 30)
        return httpx.AsyncClient(base_url=self.url, headers=headers, **kwargs)

    def request_shutdown(self) -> None:
        """Begin the graceful shutdown, as SIGTERM would."""
        self.server.request_shutdown()


@contextlib.asynccontextmanager
async def running_server(server: Server, *, host: str = "127.0.0.1") -> AsyncIterator[RunningServer]:
    """Serve `server` through hypercorn on a free port of `host` inside the block.

    Leaving the block shuts the server down gracefully (jobs cancelled,
    results flushed). Signals are left alone.
    """
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(server.serve, host, 0, handle_signals=False))
        assert server.auth_token is not None
        try:
            yield RunningServer(server, binds[0], server.auth_token)
        finally:
            server.request_shutdown()
