"""A real HTTP callback receiver for tests: records every request, answers as scripted.

A raw ASGI app served by hypercorn on a loopback port (port 0, or a socket
the test bound itself), so callbacks cross a real TCP connection exactly as
in production. Scripted answers cover what receivers do in the wild: fail,
hang, redirect, answer 410 or 429 with Retry-After.
"""

from __future__ import annotations

import dataclasses
import socket
from collections import deque
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve


@dataclasses.dataclass(frozen=True)
class Received:
    """One request as the receiver saw it."""

    method: str
    path: str
    headers: dict[str, str]  # names lowercased
    body: bytes
    at: float  # trio.current_time() on arrival (virtual under a MockClock)
    client_port: int | None


@dataclasses.dataclass(frozen=True)
class Answer:
    """How to answer one request. `hang`: answer only once `release()` is called."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    hang: bool = False


class ScriptedReceiver:
    """Records requests; answers each with the next scripted `Answer` (then `default`)."""

    def __init__(self, default: Answer = Answer()) -> None:
        self.default = default
        self.received: list[Received] = []
        self.url = ""
        self._script: deque[Answer] = deque()
        self._arrived = trio.Event()
        self._released = trio.Event()

    def answer(self, *answers: Answer) -> None:
        """Answer the next requests with `answers`, in order."""
        self._script.extend(answers)

    def release(self) -> None:
        """Let every hanging request (now and later) give its answer."""
        self._released.set()

    def bodies(self, path: str | None = None) -> list[bytes]:
        return [item.body for item in self.received if path is None or item.path == path]

    async def wait_for(self, count: int, *, timeout: float = 1000) -> list[Received]:
        """Wait until `count` requests have arrived; return them all.

        Raises `trio.TooSlowError` after `timeout` seconds (of the test's clock).
        """
        with trio.fail_after(timeout):
            while len(self.received) < count:
                await self._arrived.wait()
        return list(self.received)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        client = scope.get("client")
        self.received.append(
            Received(
                scope["method"],
                scope["path"],
                headers,
                b"".join(chunks),
                trio.current_time(),
                client[1] if client else None,
            )
        )
        arrived, self._arrived = self._arrived, trio.Event()
        arrived.set()
        answer = self._script.popleft() if self._script else self.default
        if answer.hang:
            await self._released.wait()
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [(b"content-type", b"text/plain")]
                + [(name.encode(), value.encode()) for name, value in answer.headers],
            }
        )
        await send({"type": "http.response.body", "body": b"ok\n"})


async def serve_receiver(
    receiver: ScriptedReceiver,
    sock: socket.socket | None = None,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `receiver` on 127.0.0.1 (a free port, or `sock` when given); start with its URL.

    A given `sock` (bound and listening) is handed over: hypercorn closes it.
    """
    config = Config()
    config.bind = [f"fd://{sock.detach()}"] if sock is not None else ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.1
    # Under a MockClock a 5 s keep-alive (the default) closes the pooled connection
    # at the very instant the 5 s retry wait ends, losing that attempt to the race.
    config.keep_alive_timeout = 100_000

    async def started(task_status: trio.TaskStatus[list[str]]) -> None:
        await serve(receiver, config, task_status=task_status)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(started)
        receiver.url = binds[0]
        task_status.started(receiver.url)
