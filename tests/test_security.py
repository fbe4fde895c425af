"""Security: secrets stay out of logs, bodies are refused before being read whole."""

from __future__ import annotations

import logging

import httpx
import trio

import funtask_trio as ft
from funtask_trio.testing import running_server

SECRET_TOKEN = "s3cret-t0ken-that-must-never-be-logged"


def small_server(make_server, **options) -> ft.Server:
    server = make_server(auth_token=SECRET_TOKEN, **options)

    @server.task
    async def greet(run: ft.Run, params: ft.Params) -> ft.Result:
        await run.step("greeting")
        return ft.ok("hi")

    @server.task
    async def boom(run: ft.Run, params: ft.Params) -> ft.Result:
        raise RuntimeError("failure text")

    return server


async def test_the_token_is_never_logged_whatever_route_or_outcome(make_server, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    server = small_server(make_server)
    async with running_server(server) as running, running.client() as client:
        await client.post("/run/greet")
        await client.post("/run/boom")
        await client.get("/health")
        async with httpx.AsyncClient(base_url=running.url) as anonymous:
            async with anonymous.stream("GET", "/events", params={"token": SECRET_TOKEN}) as r:
                assert r.status_code == 200
            await anonymous.get("/health", params={"token": SECRET_TOKEN})
            await anonymous.get("/health", headers={"Authorization": f"Bearer {SECRET_TOKEN}x"})
    captured = capfd.readouterr()
    # The test's own httpx client logs its URLs; everything else is the server's.
    server_records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert len(server_records) >= 3, "the server logged (almost) nothing: the check is vacuous"
    assert all(SECRET_TOKEN not in logging.Formatter().format(r) for r in server_records)
    server_output = [
        line for line in (captured.out + captured.err).splitlines() if "httpx" not in line
    ]
    assert not [line for line in server_output if SECRET_TOKEN in line]


async def open_post(url: str, header: bytes) -> trio.SocketStream:
    """A raw connection to `url`'s server with an authorized POST /run/greet head sent."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(
        b"POST /run/greet HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {SECRET_TOKEN}\r\n".encode()
        + header
        + b"\r\n\r\n"
    )
    return stream


async def read_json_answer(stream: trio.SocketStream, answer: bytes = b"") -> bytes:
    with trio.fail_after(10):
        while not answer.endswith(b"}\n"):
            answer += await stream.receive_some()
    return answer


async def test_a_chunked_body_over_the_limit_is_refused_before_it_is_sent_whole(make_server):
    limit = 4096
    server = small_server(make_server, max_body_size=limit)
    async with running_server(server) as running:
        async with await open_post(running.url, b"Transfer-Encoding: chunked") as stream:
            chunk = b"x" * 1024
            sent = 0
            answer = b""
            with trio.fail_after(10):
                # Keep sending until the server answers; it must not wait for the end.
                while b"\r\n\r\n" not in answer and sent < 100 * limit:
                    await stream.send_all(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
                    with trio.move_on_after(0.05):
                        answer += await stream.receive_some()
            answer = await read_json_answer(stream, answer)
    assert answer.startswith(b"HTTP/1.1 413")
    assert answer.endswith(b'{"error":"request body too large"}\n')
    assert sent < 100 * limit, "the server read the whole oversized body"


async def test_a_content_length_over_the_limit_is_refused_without_reading(make_server):
    server = small_server(make_server, max_body_size=1024)
    async with running_server(server) as running:
        async with await open_post(running.url, b"Content-Length: 1000000000") as stream:
            answer = await read_json_answer(stream)
    assert answer.startswith(b"HTTP/1.1 413")
