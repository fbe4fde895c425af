"""The dead-letter directory: safe names, atomic 0600 writes, callback records, replay listing."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from funtask_trio._deadletters import DeadLetterDir, is_safe_job_id


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def letters(tmp_path: Path) -> DeadLetterDir:
    directory = DeadLetterDir(tmp_path / "letters")
    assert directory.ensure() is None
    return directory


@pytest.mark.parametrize(
    "job_id",
    ["job-1", "...", ".hidden", "with space", "ünïcödé", "a:b", "x.json", "x" * 200, "é" * 100],
)
def test_safe_job_ids(job_id: str) -> None:
    assert is_safe_job_id(job_id)


@pytest.mark.parametrize(
    "job_id",
    ["", ".", "..", "../x", "a/b", "/abs", "a\\b", "..\\x", "nul\x00", "x" * 201, "é" * 101],
)
def test_unsafe_job_ids(job_id: str) -> None:
    assert not is_safe_job_id(job_id)
    with pytest.raises(ValueError):
        DeadLetterDir("/tmp/nowhere").result_path(job_id)


def test_ensure_creates_a_private_directory(tmp_path: Path) -> None:
    directory = DeadLetterDir(tmp_path / "a" / "b")
    assert directory.ensure() is None
    assert mode(tmp_path / "a" / "b") == 0o700


def test_ensure_reports_a_path_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    problem = DeadLetterDir(tmp_path / "file").ensure()
    assert problem is not None and "cannot be created" in problem


def test_write_puts_the_exact_bytes_and_a_callback_record_at_0600(
    letters: DeadLetterDir,
) -> None:
    body = b'{"jobId":"j1","success":true,"duration":"1ms"}'
    old_umask = os.umask(0)  # the files must be private whatever the umask
    try:
        letters.write_sync("j1", body, "https://hooks.example.com/x", "greet")
    finally:
        os.umask(old_umask)
    assert sorted(os.listdir(letters.path)) == ["j1.callback", "j1.json"]
    assert (letters.path / "j1.json").read_bytes() == body
    assert json.loads((letters.path / "j1.callback").read_bytes()) == {
        "callbackUrl": "https://hooks.example.com/x",
        "task": "greet",
    }
    assert mode(letters.path / "j1.json") == 0o600
    assert mode(letters.path / "j1.callback") == 0o600


def test_rewriting_a_letter_replaces_it_and_keeps_it_private(letters: DeadLetterDir) -> None:
    target = letters.path / "j1.json"
    target.write_bytes(b"old")
    target.chmod(0o644)
    letters.write_sync("j1", b"new", "https://hooks.example.com/x", "greet")
    assert target.read_bytes() == b"new"
    assert mode(target) == 0o600


def test_write_refuses_to_follow_a_planted_symlink(letters: DeadLetterDir, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    # Whatever sits at the final name is replaced, never written through.
    (letters.path / "j1.json").symlink_to(victim)
    letters.write_sync("j1", b"body", "https://hooks.example.com/x", "greet")
    assert victim.read_text() == "untouched"
    assert not (letters.path / "j1.json").is_symlink()
    assert (letters.path / "j1.json").read_bytes() == b"body"


def test_concurrent_writes_of_one_job_id_both_succeed(letters: DeadLetterDir) -> None:
    # Two tasks may finish jobs with the same jobId at the same moment.
    errors: list[BaseException] = []

    def write(body: bytes) -> None:
        try:
            for _ in range(50):
                letters.write_sync("same", body, "https://hooks.example.com/x", "t")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(body,)) for body in (b"A" * 1000, b"B" * 1000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert (letters.path / "same.json").read_bytes() in (b"A" * 1000, b"B" * 1000)
    assert sorted(os.listdir(letters.path)) == ["same.callback", "same.json"]


def test_a_failed_write_leaves_no_temporary_file(letters: DeadLetterDir) -> None:
    # A directory where the letter should go: os.replace fails after the data is written.
    (letters.path / "blocked.json").mkdir()
    with pytest.raises(OSError):
        letters.write_sync("blocked", b"body", "https://hooks.example.com/x", "greet")
    assert not [name for name in os.listdir(letters.path) if name.endswith(".tmp")]


def test_write_into_a_directory_that_became_a_file_raises_oserror(tmp_path: Path) -> None:
    path = tmp_path / "letters"
    path.write_text("not a directory")
    with pytest.raises(NotADirectoryError):
        DeadLetterDir(path).write_sync("j1", b"body", "https://hooks.example.com/x", "greet")


def test_remove_deletes_the_letter_and_its_record(letters: DeadLetterDir) -> None:
    letters.write_sync("j1", b"body", "https://hooks.example.com/x", "greet")
    letters.write_sync("j2", b"body", "https://hooks.example.com/x", "greet")
    letters.remove_sync("j1")
    letters.remove_sync("never-written")
    assert sorted(os.listdir(letters.path)) == ["j2.callback", "j2.json"]


def test_pending_lists_letters_oldest_first_with_their_records(letters: DeadLetterDir) -> None:
    letters.write_sync("newer", b"2", "https://hooks.example.com/2", "b")
    letters.write_sync("older", b"1", "https://hooks.example.com/1", "a")
    os.utime(letters.path / "older.json", (1_000_000, 1_000_000))
    (letters.path / "from-go.json").write_bytes(b"3")  # as Go writes them: no record
    os.utime(letters.path / "from-go.json", (2_000_000, 2_000_000))
    # Not letters: temporaries, stray files, names that could not be jobIds.
    (letters.path / ".x.json.0123.tmp").write_bytes(b"partial")
    (letters.path / "notes.txt").write_bytes(b"")
    (letters.path / ".json").write_bytes(b"")
    (letters.path / "..json").write_bytes(b"")
    pending = letters.pending()
    assert [(p.job_id, p.body, p.callback_url, p.task) for p in pending] == [
        ("older", b"1", "https://hooks.example.com/1", "a"),
        ("from-go", b"3", None, None),
        ("newer", b"2", "https://hooks.example.com/2", "b"),
    ]
    assert pending[0].path == letters.path / "older.json"


@pytest.mark.parametrize(
    "record",
    [
        b"{",
        b"[1, 2]",
        b'"https://hooks.example.com/x"',
        b'{"callbackUrl": 42, "task": ["t"]}',
        b'{"callbackUrl": "", "task": ""}',
        b'{"callbackUrl": null}',
        b"\xff\xfe",
    ],
)
def test_a_corrupt_callback_record_means_no_callback(letters: DeadLetterDir, record: bytes) -> None:
    (letters.path / "j1.json").write_bytes(b"body")
    (letters.path / "j1.callback").write_bytes(record)
    [letter] = letters.pending()
    assert (letter.job_id, letter.body, letter.callback_url, letter.task) == (
        "j1",
        b"body",
        None,
        None,
    )


def test_pending_on_a_missing_directory_is_empty(tmp_path: Path) -> None:
    assert DeadLetterDir(tmp_path / "missing").pending() == []


def test_load_of_a_missing_letter_raises_file_not_found(letters: DeadLetterDir) -> None:
    with pytest.raises(FileNotFoundError):
        letters.load("nope")


def test_a_replayed_letter_is_removed_only_while_it_holds_the_replayed_bytes(tmp_path):
    from funtask_trio._deadletters import DeadLetterDir

    letters = DeadLetterDir(tmp_path)
    letters.write_sync("j", b'{"old":1}', "http://127.0.0.1:9/x", "t")
    letters.write_sync("j", b'{"new":2}', "http://127.0.0.1:9/x", "t")  # a new job, same jobId
    letters.remove_sync("j", only_if=b'{"old":1}')
    assert (tmp_path / "j.json").read_bytes() == b'{"new":2}'
    letters.remove_sync("j", only_if=b'{"new":2}')
    assert not (tmp_path / "j.json").exists() and not (tmp_path / "j.callback").exists()
    letters.remove_sync("gone", only_if=b"x")  # nothing there: nothing to do


def test_a_letter_without_callback_writes_no_record(tmp_path):
    from funtask_trio._deadletters import DeadLetterDir

    DeadLetterDir(tmp_path).write_sync("s", b"{}", None, "t")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["s.json"]
