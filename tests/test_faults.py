"""Faults on the way to disk: a full disk loses no result and stops nothing else."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from pathlib import Path

import pytest
import trio

import funtask_trio as ft
from funtask_trio.testing import CallbackReceiver, running_server


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 64 KiB tmpfs filled to the brim (needs root and mount: skipped elsewhere)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        dead_letters = mount_point / "dead-letters"
        dead_letters.mkdir()
        yield dead_letters
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path) -> None:
    fd = os.open(directory.parent / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 512):
            pass
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)


async def test_a_full_disk_means_no_callback_a_clear_log_and_a_server_that_keeps_serving(
    full_disk: Path, callback_receiver: CallbackReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    server = ft.Server(
        "disk-full",
        auth_token="t",
        dead_letter_dir=full_disk,
        callback_allowlist=[callback_receiver.origin],
    )

    @server.task
    async def greet(run: ft.Run, params: ft.Params) -> ft.Result:
        return ft.ok("Hello!")

    async with running_server(server) as running, running.client() as client:
        fill(full_disk)
        response = await client.post(
            "/run/greet", json={"jobId": "no-space", "callbackUrl": callback_receiver.url}
        )
        assert response.status_code == 202
        with trio.fail_after(10):
            while (stored := await client.get("/result/no-space")).status_code != 200:
                await trio.sleep(0.01)
        await trio.sleep(0.2)  # a callback, were one (wrongly) attempted, would be here by now
        sync = await client.post("/run/greet", json={})
    assert stored.json()["message"] == "Hello!"
    assert callback_receiver.received == []
    assert sync.status_code == 200
    failures = [r for r in caplog.records if "dead letter could not be written" in r.message]
    assert len(failures) == 1 and failures[0].levelno == logging.ERROR
    assert "greet" in failures[0].message and "no-space" in failures[0].message
    assert "No space left on device" in failures[0].message
    assert [path.name for path in full_disk.iterdir() if not path.name.startswith(".")] == []
