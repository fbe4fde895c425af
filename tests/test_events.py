"""``/events``: SSE over real HTTP, coalescing, cleanup, keepalive."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from functools import partial

import httpx
import pytest
import trio

import funtask_trio as ft
from funtask_trio._events import ChangeFeed, SnapshotCache, sse_frames
from funtask_trio.testing import running_server


async def frames(response: httpx.Response) -> AsyncIterator[str]:
    """Whole SSE frames (without the blank line) from a streaming response."""
    buffer = ""
    async for text in response.aiter_text():
        buffer += text
        while "\n\n" in buffer:
            frame, buffer = buffer.split("\n\n", 1)
            yield frame


def snapshot_of(frame: str) -> dict:
    assert frame.startswith("data: ") and "\n" not in frame, frame
    return json.loads(frame[len("data: ") :])


def storm_server(make_server, **options) -> ft.Server:
    server = make_server(**options)

    @server.task
    async def greet(run: ft.Run, params: ft.Params) -> ft.Result:
        return ft.ok("hi")

    @server.task
    async def storm(run: ft.Run, params: ft.Params) -> ft.Result:
        steps = params.int("steps")
        for index in range(steps):
            await run.progress(index + 1, steps, "step %d", index + 1)
        return ft.ok("stormed")

    return server


async def test_stream_headers_first_frame_and_a_frame_per_change(make_server):
    async with running_server(storm_server(make_server)) as running, running.client() as client:
        async with client.stream("GET", "/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            stream = frames(response)
            with trio.fail_after(5):
                first = snapshot_of(await anext(stream))
                assert first["name"] == "test-server" and first["status"] == "ok"
                assert "lastJob" not in first["tasks"]["greet"]
                await client.post("/run/greet", json={"jobId": "g1"})
                while True:
                    latest = snapshot_of(await anext(stream))
                    if latest["tasks"]["greet"].get("lastJob"):
                        break
            assert latest["tasks"]["greet"]["lastJob"]["jobId"] == "g1"
            await stream.aclose()


async def test_progress_storm_coalesces_and_a_stalled_subscriber_does_not_slow_the_job(
    make_server,
):
    server = storm_server(make_server)
    steps = 20_000
    async with running_server(server) as running, running.client() as client:
        host, port = running.url.removeprefix("http://").rsplit(":", 1)
        # A subscriber that connects and never reads a byte.
        stalled = socket.create_connection((host, int(port)))
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(f"GET /events?token={running.token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        try:
            async with client.stream("GET", "/events") as response:
                stream = frames(response)
                await anext(stream)
                with trio.fail_after(30):
                    result = await client.post("/run/storm", json={"params": {"steps": steps}})
                    assert result.json()["message"] == "stormed"
                    received = 0
                    while True:
                        latest = snapshot_of(await anext(stream))
                        received += 1
                        if latest["tasks"]["storm"].get("lastJob"):
                            break
            assert received < steps / 10, f"{received} frames for {steps} changes: no coalescing"
            assert latest["tasks"]["storm"]["results"][0]["message"] == "stormed"
        finally:
            stalled.close()


async def test_disconnected_subscribers_leave_nothing_behind(make_server):
    server = storm_server(make_server)
    async with running_server(server) as running, running.client() as client:
        serving = server._serving
        assert serving is not None
        for _ in range(20):
            async with client.stream("GET", "/events") as response:
                await anext(frames(response))
        await client.post("/run/greet")  # wakes any subscriber still parked
        with trio.fail_after(5):
            while serving.feed._changed.statistics().tasks_waiting:
                await trio.sleep(0.01)
        # Only the server's own tasks remain: no stream handler is left running.
        assert serving.feed._changed.statistics().tasks_waiting == 0


async def test_keepalive_comment_on_a_quiet_stream(make_server):
    server = storm_server(make_server, sse_keepalive=0.2)
    async with running_server(server) as running, running.client() as client:
        async with client.stream("GET", "/events") as response:
            stream = frames(response)
            await anext(stream)
            with trio.fail_after(5):
                assert await anext(stream) == ": keepalive"


async def test_sse_frames_coalesce_a_burst_into_one_frame(autojump_clock):
    feed = ChangeFeed()
    builds = []

    def build() -> bytes:
        builds.append(feed.version)
        return json.dumps({"version": feed.version}).encode()

    cache = SnapshotCache(feed, build)
    stream = sse_frames(feed, cache, keepalive_s=30, min_interval_s=0.02, progress_interval_s=0.2)
    assert await anext(stream) == b'data: {"version": 0}\n\n'
    for _ in range(1000):
        feed.notify()
    assert await anext(stream) == b'data: {"version": 1000}\n\n'
    await trio.sleep(29.9)
    assert await anext(stream) == b": keepalive\n\n"
    feed.close()
    assert [frame async for frame in stream] == []
    assert builds == [0, 1000]


async def test_progress_frames_wait_longer_than_job_starts_and_ends(autojump_clock):
    feed = ChangeFeed()
    cache = SnapshotCache(feed, lambda: str(feed.version).encode())
    stream = sse_frames(feed, cache, keepalive_s=30, min_interval_s=0.02, progress_interval_s=0.2)
    await anext(stream)
    await trio.sleep(1)

    async def notify_later(delay: float, *, lifecycle: bool) -> None:
        await trio.sleep(delay)
        feed.notify(lifecycle=lifecycle)

    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        feed.notify()  # progress only
        assert await anext(stream) == b"data: 1\n\n"
        assert trio.current_time() - start == pytest.approx(0.2)
        # Progress again, then a job ends 50 ms later: the end is not held back.
        start = trio.current_time()
        feed.notify()
        nursery.start_soon(partial(notify_later, 0.05, lifecycle=True))
        assert await anext(stream) == b"data: 3\n\n"
        assert trio.current_time() - start == pytest.approx(0.05)
        # A lifecycle change right after a frame waits only the minimum interval.
        start = trio.current_time()
        feed.notify(lifecycle=True)
        assert await anext(stream) == b"data: 4\n\n"
        assert trio.current_time() - start == pytest.approx(0.02)
    await stream.aclose()


async def test_snapshot_is_built_once_per_change_for_all_subscribers():
    feed = ChangeFeed()
    builds = []
    cache = SnapshotCache(feed, lambda: builds.append(1) or b"{}")
    for _ in range(100):
        cache.get()
    feed.notify()
    for _ in range(100):
        cache.get()
    assert len(builds) == 2
