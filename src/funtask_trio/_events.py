"""Change notifications for live views, coalescing by design.

A `ChangeFeed` is a version counter plus a `trio.Event` swapped on every
change. Announcing a change is O(1) whatever the number of subscribers: only
subscribers already parked on the event are woken, and one that is busy (or
slow, or not reading) simply sees a higher version next time it looks, so it
gets the newest state and never a backlog.

Changes come in two weights: lifecycle changes (a job starts or ends) go out
within `min_interval_s`; progress-only changes coalesce over the longer
`progress_interval_s`, which keeps a progress storm cheap with many
subscribers while a job's end still reaches every one of them at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import trio


class ChangeFeed:
    """Announces that the observable state changed; subscribers wait for a newer version."""

    __slots__ = (
        "version",
        "lifecycle_version",
        "_changed",
        "_lifecycle_changed",
        "_waiting",
        "_lifecycle_waiting",
        "_closed",
    )

    def __init__(self) -> None:
        self.version = 0
        self.lifecycle_version = 0
        self._changed = trio.Event()
        self._lifecycle_changed = trio.Event()
        # Counted here because run.progress() calls notify() in its hot path.
        self._waiting = 0
        self._lifecycle_waiting = 0
        self._closed = False

    def notify(self, *, lifecycle: bool = False) -> None:
        """Announce a change (`lifecycle`: a job started or ended). O(1); never blocks."""
        self.version += 1
        if self._waiting:
            self._changed.set()
            self._changed = trio.Event()
        if lifecycle:
            self.lifecycle_version += 1
            if self._lifecycle_waiting:
                self._lifecycle_changed.set()
                self._lifecycle_changed = trio.Event()

    def close(self) -> None:
        """End every subscription (shutdown); waiters wake and see `closed`."""
        self._closed = True
        self._changed.set()
        self._lifecycle_changed.set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait_newer(self, seen: int) -> int:
        """Wait until the version is newer than `seen` (or the feed closes); return it."""
        while self.version == seen and not self._closed:
            self._waiting += 1
            try:
                await self._changed.wait()
            finally:
                self._waiting -= 1
        return self.version

    async def wait_lifecycle_newer(self, seen: int) -> None:
        """Wait until a job starts or ends after lifecycle version `seen` (or the feed closes).

        Progress changes do not wake this waiter.
        """
        while self.lifecycle_version == seen and not self._closed:
            self._lifecycle_waiting += 1
            try:
                await self._lifecycle_changed.wait()
            finally:
                self._lifecycle_waiting -= 1


class SnapshotCache:
    """Builds the serialized snapshot once per change (and per second), shared by all readers."""

    __slots__ = ("_feed", "_build", "_key", "_body")

    def __init__(self, feed: ChangeFeed, build: Callable[[], bytes]) -> None:
        self._feed = feed
        self._build = build
        self._key: tuple[int, int] = (-1, -1)
        self._body = b""

    def get(self) -> bytes:
        # Running times and uptime tick in seconds, so a cached body expires each second.
        key = (self._feed.version, int(trio.current_time()))
        if key != self._key:
            self._body = self._build()
            self._key = key
        return self._body


async def sse_frames(
    feed: ChangeFeed,
    cache: SnapshotCache,
    *,
    keepalive_s: float,
    min_interval_s: float,
    progress_interval_s: float,
) -> AsyncIterator[bytes]:
    """The ``/events`` body: the snapshot at once, then after every change, plus keepalives.

    A subscriber sends at most one frame per `min_interval_s`, and while only
    progress changed, one per `progress_interval_s`; changes in between
    coalesce into the next frame, so a progress storm costs each subscriber a
    bounded number of writes and never a backlog.
    """
    seen = feed.version
    seen_lifecycle = feed.lifecycle_version
    yield b"data: " + cache.get() + b"\n\n"
    last_sent = trio.current_time()
    while True:
        with trio.move_on_after(keepalive_s) as keepalive:
            await feed.wait_newer(seen)
        if feed.closed:
            return
        if keepalive.cancelled_caught:
            yield b": keepalive\n\n"
            continue
        # Progress only: let it settle longer, unless a job starts or ends meanwhile.
        with trio.move_on_at(last_sent + progress_interval_s):
            await feed.wait_lifecycle_newer(seen_lifecycle)
        await trio.sleep_until(last_sent + min_interval_s)
        if feed.closed:
            return
        seen = feed.version
        seen_lifecycle = feed.lifecycle_version
        yield b"data: " + cache.get() + b"\n\n"
        last_sent = trio.current_time()
