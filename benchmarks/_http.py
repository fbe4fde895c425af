"""A minimal HTTP/1.1 client and server over Trio streams, for load that costs little CPU.

httpx spends ~100 us of Python per request; these spend a few, so the
client side of a benchmark stays far below the server it measures. Only
what the funtask protocol needs: keep-alive requests with Content-Length
bodies, chunked streaming (``/events``), and plain ``http://`` on loopback.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import trio

READ_SIZE = 65536


@dataclasses.dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def build_request(
    method: str,
    host: str,
    path: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """The bytes of one keep-alive request (prebuild them for load loops)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class ByteReader:
    """Buffered reads from a Trio stream: lines of a head, exact lengths, chunks."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def fill(self) -> None:
        data = await self.stream.receive_some(READ_SIZE)
        if not data:
            raise ConnectionError("connection closed by peer")
        self.buffer += data

    async def until(self, marker: bytes) -> bytes:
        """Everything up to and including `marker`."""
        start = 0
        while True:
            index = self.buffer.find(marker, start)
            if index >= 0:
                end = index + len(marker)
                data = bytes(self.buffer[:end])
                del self.buffer[:end]
                return data
            start = max(0, len(self.buffer) - len(marker) + 1)
            await self.fill()

    async def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self.fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def head(self) -> tuple[str, dict[str, str]]:
        """The start line and the headers (names lower-cased) of a message."""
        lines = (await self.until(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        return lines[0], headers

    async def body_chunks(self, headers: Mapping[str, str]) -> AsyncIterator[bytes]:
        """The body as it arrives: chunked, Content-Length, or until the peer closes."""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.until(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.until(b"\r\n")
                    return
                chunk = await self.exactly(size)
                await self.exactly(2)
                yield chunk
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if length:
                yield await self.exactly(length)
        else:
            if self.buffer:
                yield bytes(self.buffer)
                self.buffer.clear()
            while data := await self.stream.receive_some(READ_SIZE):
                yield bytes(data)

    async def body(self, headers: Mapping[str, str]) -> bytes:
        return b"".join([chunk async for chunk in self.body_chunks(headers)])


class Connection:
    """One keep-alive client connection to a base URL."""

    def __init__(self, stream: trio.SocketStream, host: str) -> None:
        self.stream = stream
        self.host = host
        self.reader = ByteReader(stream)

    @classmethod
    async def open(cls, base_url: str) -> Connection:
        parts = urlsplit(base_url)
        stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 80)
        return cls(stream, parts.netloc)

    def build(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        return build_request(method, self.host, path, body, headers)

    async def send(self, raw: bytes) -> None:
        await self.stream.send_all(raw)

    async def response_head(self) -> tuple[int, dict[str, str]]:
        start_line, headers = await self.reader.head()
        return int(start_line.split(" ", 2)[1]), headers

    async def response(self) -> Response:
        status, headers = await self.response_head()
        return Response(status, headers, await self.reader.body(headers))

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        await self.send(self.build(method, path, body, headers))
        return await self.response()

    async def post_json(
        self, path: str, document: Any, headers: Mapping[str, str] | None = None
    ) -> Response:
        body = json.dumps(document).encode()
        return await self.request(
            "POST", path, body, {"Content-Type": "application/json", **(headers or {})}
        )

    async def aclose(self) -> None:
        await self.stream.aclose()


# -- a receiver for callbacks ------------------------------------------------------

RECEIVED = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


async def serve_posts(
    listener: trio.SocketListener,
    on_request: Callable[[bytes, int], Awaitable[None] | None],
) -> None:
    """Answer every request on `listener` with 200; hand each body and client port over."""

    async def connection(stream: trio.SocketStream) -> None:
        port = stream.socket.getpeername()[1]
        reader = ByteReader(stream)
        try:
            async with stream:
                while True:
                    _, headers = await reader.head()
                    has_body = "content-length" in headers or "transfer-encoding" in headers
                    body = await reader.body(headers) if has_body else b""
                    outcome = on_request(body, port)
                    if outcome is not None:
                        await outcome
                    await stream.send_all(RECEIVED)
        except (ConnectionError, trio.BrokenResourceError, trio.ClosedResourceError):
            return

    await trio.serve_listeners(connection, [listener])
