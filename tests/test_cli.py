"""The funtask-trio command, run as a subprocess (``python -m funtask_trio``)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import funtask_trio as ft
from funtask_trio._deadletters import DeadLetterDir
from funtask_trio.cli import UsageError, main, parse_params, parse_value
from funtask_trio.testing import open_callback_receiver, running_server

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 20

pytestmark = pytest.mark.slow


def clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FUNTASK_")}
    env.update(extra)
    return env


async def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(TIMEOUT_S):
        return await trio.run_process(
            [sys.executable, "-m", "funtask_trio", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=REPO,
            env=env if env is not None else clean_env(),
        )


async def cli_many(
    commands: Sequence[Sequence[str]], env: dict[str, str] | Sequence[dict[str, str]] | None = None
) -> list[subprocess.CompletedProcess[bytes]]:
    """Run independent commands at once (each with `env`, or its own), results in order."""
    envs = env if isinstance(env, Sequence) else [env or clean_env()] * len(commands)
    results: list[Any] = [None] * len(commands)

    async def one(index: int) -> None:
        results[index] = await cli(*commands[index], env=envs[index])

    async with trio.open_nursery() as nursery:
        for index in range(len(commands)):
            nursery.start_soon(one, index)
    return results


def one_line_error(process: subprocess.CompletedProcess[bytes]) -> str:
    stderr = process.stderr.decode()
    assert "Traceback" not in stderr
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith("funtask-trio: ")
    return stderr.strip()


@dataclasses.dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def error(self) -> str:
        assert "Traceback" not in self.err
        assert self.err.count("\n") == 1 and self.err.startswith("funtask-trio: "), self.err
        return self.err.strip()


@pytest.fixture
def in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Outcome]:
    """`cli.main` in this process (the same parser and handlers, without the start-up cost)."""
    for key in list(os.environ):
        if key.startswith("FUNTASK_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(REPO)

    def run(*args: str) -> Outcome:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exit:  # argparse: --help, usage errors
            code = int(exit.code or 0)
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run


# -- help and usage -------------------------------------------------------------------


async def test_help_as_a_subprocess() -> None:
    process = await cli("--help")
    assert process.returncode == 0
    assert process.stdout.decode().startswith("usage: funtask-trio")
    for command in ("serve", "call", "dead-letters"):
        assert command in process.stdout.decode()


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["serve", "--help"], "--port"),
        (["call", "--help"], "key=value"),
        (["dead-letters", "--help"], "replay"),
        (["dead-letters", "list", "--help"], "--dir"),
        (["dead-letters", "show", "--help"], "JOB_ID"),
        (["dead-letters", "replay", "--help"], "--all"),
    ],
)
def test_every_command_has_help(
    in_process: Callable[..., Outcome], args: list[str], mentions: str
) -> None:
    outcome = in_process(*args)
    assert outcome.code == 0
    assert outcome.out.startswith("usage: funtask-trio")
    assert mentions in outcome.out


def test_no_command_prints_help_and_exits_2(in_process: Callable[..., Outcome]) -> None:
    bare = in_process()
    assert bare.code == 2 and "usage: funtask-trio" in bare.err
    dead_letters = in_process("dead-letters")
    assert dead_letters.code == 2 and "replay" in dead_letters.err
    unknown_option = in_process("serve", "examples.counter:server", "--bogus")
    assert unknown_option.code == 2 and "unrecognized arguments: --bogus" in unknown_option.err


async def test_serve_refuses_a_missing_module_in_one_line_as_a_subprocess() -> None:
    missing, not_server = await cli_many(
        [["serve", "no_such_module:server"], ["serve", "examples.counter:greet"]]
    )
    assert missing.returncode == not_server.returncode == 2
    assert "cannot import module 'no_such_module'" in one_line_error(missing)
    assert "examples.counter:greet is not a funtask_trio.Server (got function)" in one_line_error(
        not_server
    )


def test_serve_refuses_bad_servers_in_one_line(
    in_process: Callable[..., Outcome], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_module.py").write_text("raise RuntimeError('half-written')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cases = {
        "examples.counter:nothing": "module 'examples.counter' has no attribute 'nothing'",
        "examples.counter": "expected MODULE:ATTRIBUTE",
        ":server": "expected MODULE:ATTRIBUTE",
        "broken_module:server": "importing module 'broken_module' failed: RuntimeError:"
        " half-written",
    }
    for spec, message in cases.items():
        outcome = in_process("serve", spec)
        assert outcome.code == 2, spec
        assert message in outcome.error, spec
    bad_port = in_process("serve", "examples.counter:server", "--port", "99999")
    assert bad_port.code == 2 and "not a port number" in bad_port.err


async def test_serve_reports_an_unusable_configuration(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    process = await cli(
        "serve",
        "examples.counter:server",
        "--port",
        "0",
        env=clean_env(FUNTASK_AUTH_TOKEN="t", FUNTASK_DEAD_LETTER_DIR=str(blocked / "dl")),
    )
    assert process.returncode == 2
    assert "invalid funtask configuration: dead-letter directory" in one_line_error(process)


async def test_serve_prints_the_bound_url_answers_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    env = clean_env(FUNTASK_AUTH_TOKEN="serve-token", FUNTASK_DEAD_LETTER_DIR=str(tmp_path / "dl"))
    with (tmp_path / "stderr").open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "funtask_trio",
                "serve",
                "examples.counter:server",
                "--port",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=REPO,
            env=env,
        )
        try:
            assert process.stdout is not None
            output = b""
            with trio.fail_after(TIMEOUT_S):
                while b"try:" not in output:
                    chunk = await process.stdout.receive_some()
                    assert chunk, (output, (tmp_path / "stderr").read_text())
                    output += chunk
            first_line = output.decode().splitlines()[0]
            url = first_line.rsplit(" ", 1)[1]
            assert first_line == f"funtask server 'counter' listening on {url}"
            assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
            assert "token:        serve-token" in output.decode()
            async with httpx.AsyncClient(base_url=url) as client:
                assert (await client.get("/livez")).json() == {"status": "ok"}
                ran = await client.post(
                    "/run/greet",
                    json={"params": {"name": "CLI"}},
                    headers={"Authorization": "Bearer serve-token"},
                )
                assert ran.json()["message"] == "Hello, CLI!"
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(TIMEOUT_S):
                returncode = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert returncode == 0
    assert "Traceback" not in (tmp_path / "stderr").read_text()


# -- call ----------------------------------------------------------------------------------


def test_parse_value_reads_json_when_it_parses() -> None:
    assert parse_value("5") == 5
    assert parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value('"5"') == "5"
    assert parse_value("null") is None
    assert parse_value("World") == "World"
    assert parse_value("007") == "007"
    assert parse_value("NaN") == "NaN"
    assert parse_value("") == ""


def test_parse_params_overlays_assignments_on_json() -> None:
    assert parse_params('{"a": 1, "b": 2}', ["b=3", "c=x=y"]) == {"a": 1, "b": 3, "c": "x=y"}
    for json_text, items in [(None, ["novalue"]), (None, ["=1"]), ("[1]", []), ("{", [])]:
        with pytest.raises(UsageError):
            parse_params(json_text, items)


def build_server(make_server: Callable[..., ft.Server]) -> ft.Server:
    server = make_server("cli-server")

    @server.task
    async def echo(run: ft.Run, params: ft.Params) -> ft.Result:
        return ft.ok("echoed").with_data(params.raw)

    @server.task
    async def greet(run: ft.Run, params: ft.Params) -> ft.Result:
        return ft.ok(f"Hello, {params.str('name', default='World')}!")

    @server.task
    async def fail(run: ft.Run, params: ft.Params) -> ft.Result:
        await run.step("trying")
        return ft.fail("nope", "it failed")

    return server


async def test_call(make_server: Callable[..., ft.Server]) -> None:
    async with running_server(build_server(make_server)) as served:
        url, token = served.url, served.token
        auth = ["--url", url, "--token", token]
        commands = [
            [
                "call",
                "echo",
                *auth,
                "--json",
                '{"base": 1, "count": 0}',
                "count=5",
                "flag=true",
                "name=World",
                "list=[1,2]",
                "zip=007",
                "empty=",
            ],
            ["call", "greet", "name=Env"],
            ["call", "fail", *auth],
            ["call", "nope", *auth],
            ["call", "echo", "--url", "http://127.0.0.1:1", "--token", token],
        ]
        envs = [clean_env() for _ in commands]
        envs[1] = clean_env(FUNTASK_URL=url, FUNTASK_AUTH_TOKEN=token)
        echo, from_env, failed, unknown, unreachable = await cli_many(commands, envs)
    assert echo.returncode == 0, echo.stderr
    answer = json.loads(echo.stdout)
    assert answer["success"] is True and answer["message"] == "echoed"
    assert answer["data"] == {
        "base": 1,
        "count": 5,
        "flag": True,
        "name": "World",
        "list": [1, 2],
        "zip": "007",
        "empty": "",
    }

    assert from_env.returncode == 0 and json.loads(from_env.stdout)["message"] == "Hello, Env!"

    assert failed.returncode == 1
    assert json.loads(failed.stdout)["error"] == {
        "code": "nope",
        "message": "it failed",
        "step": "trying",
    }

    assert unknown.returncode == 2
    assert one_line_error(unknown) == 'funtask-trio: 404: task "nope" not found'
    assert unreachable.returncode == 2
    assert "cannot reach http://127.0.0.1:1" in one_line_error(unreachable)
    for process in (unknown, unreachable):
        assert process.stdout == b""


async def test_call_usage_errors(
    make_server: Callable[..., ft.Server], in_process: Callable[..., Outcome]
) -> None:
    async with running_server(build_server(make_server)) as served:
        auth = ["--url", served.url, "--token", served.token]

        def call(*args: str) -> Outcome:
            return in_process("call", *args)

        bad_token = await trio.to_thread.run_sync(call, "echo", "--url", served.url, "--token", "x")
        bad_item = await trio.to_thread.run_sync(call, "echo", *auth, "novalue")
        bad_json = await trio.to_thread.run_sync(call, "echo", *auth, "--json", "[1]")
        no_token = await trio.to_thread.run_sync(call, "echo", "--url", served.url)
        bad_timeout = await trio.to_thread.run_sync(call, "echo", *auth, "--timeout", "-1")
    assert (bad_token.code, bad_token.error) == (2, "funtask-trio: 401: unauthorized")
    assert bad_item.code == 2 and "expected key=value, got 'novalue'" in bad_item.error
    assert bad_json.code == 2 and "--json must be a JSON object" in bad_json.error
    assert no_token.code == 2 and "no token: pass --token" in no_token.error
    assert bad_timeout.code == 2 and "must be positive" in bad_timeout.err
    assert bad_token.out == bad_item.out == no_token.out == ""


async def test_call_busy_task_exits_1(
    make_server: Callable[..., ft.Server], in_process: Callable[..., Outcome]
) -> None:
    server = build_server(make_server)
    release = trio.Event()

    @server.task
    async def hold(run: ft.Run, params: ft.Params) -> ft.Result:
        await release.wait()
        return ft.ok()

    async with running_server(server) as served, served.client() as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(client.post, "/run/hold", json={"jobId": "first"}))
            with trio.fail_after(5):
                while "currentJob" not in (await client.get("/health")).json()["tasks"]["hold"]:
                    await trio.sleep(0.01)
            busy = await trio.to_thread.run_sync(
                in_process, "call", "hold", "--url", served.url, "--token", served.token
            )
            release.set()
    assert busy.code == 1
    assert busy.error.startswith("funtask-trio: task 'hold' is busy with job 'first'")


# -- dead letters ----------------------------------------------------------------------------


def write_letter(directory: Path, job_id: str, url: str | None, task: str = "greet") -> bytes:
    body = b'{"jobId":"%s","success":true,"duration":"1ms"}' % job_id.encode()
    letters = DeadLetterDir(directory)
    assert letters.ensure() is None
    if url is None:  # as Go (or a hand) leaves it: no callback record
        (directory / f"{job_id}.json").write_bytes(body)
    else:
        letters.write_sync(job_id, body, url, task)
    return body


def backdate(path: Path, seconds: float) -> None:
    modified = path.stat().st_mtime - seconds
    os.utime(path, (modified, modified))


async def test_dead_letters_list_and_show(
    tmp_path: Path, in_process: Callable[..., Outcome], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "dl"
    first = write_letter(directory, "job-a", "http://hooks.example.com/a", task="countdown")
    backdate(directory / "job-a.json", 125)
    write_letter(directory, "job-b", None)
    dir_args = ["--dir", str(directory)]
    listed, shown = await cli_many(
        [["dead-letters", "list", *dir_args], ["dead-letters", "show", "job-a", *dir_args]]
    )
    assert listed.returncode == 0
    lines = listed.stdout.decode().splitlines()
    assert lines[0].split() == ["JOB", "ID", "AGE", "TASK", "CALLBACK", "URL"]
    job_id, age, task, url = lines[1].split()
    assert (job_id, task, url) == ("job-a", "countdown", "http://hooks.example.com/a")
    assert re.fullmatch(r"2m[5-9]s", age)
    assert lines[2].split()[0] == "job-b" and lines[2].split()[2:] == ["-", "-"]
    assert len(lines) == 3
    assert shown.returncode == 0 and shown.stdout == first + b"\n"

    missing = in_process("dead-letters", "show", "job-zzz", *dir_args)
    assert missing.code == 2 and "no dead letter for job 'job-zzz'" in missing.error
    unsafe = in_process("dead-letters", "show", "../etc", *dir_args)
    assert unsafe.code == 2 and "not a valid jobId" in unsafe.error
    monkeypatch.setenv("FUNTASK_DEAD_LETTER_DIR", str(directory))
    from_env = in_process("dead-letters", "list")
    assert from_env.code == 0
    assert [line.split()[0] for line in from_env.out.splitlines()] == ["JOB", "job-a", "job-b"]


def test_dead_letters_need_an_existing_directory(
    tmp_path: Path, in_process: Callable[..., Outcome]
) -> None:
    no_dir = in_process("dead-letters", "list")
    assert no_dir.code == 2
    assert "pass --dir or set FUNTASK_DEAD_LETTER_DIR" in no_dir.error
    absent = in_process("dead-letters", "replay", "--all", "--dir", str(tmp_path / "absent"))
    assert absent.code == 2 and "does not exist" in absent.error
    empty = in_process("dead-letters", "list", "--dir", str(tmp_path))
    assert empty.code == 0 and empty.out == "" and "no pending dead letters" in empty.err
    neither = in_process("dead-letters", "replay", "--dir", str(tmp_path))
    assert neither.code == 2 and "JOB_ID or --all" in neither.error
    both = in_process("dead-letters", "replay", "x", "--all", "--dir", str(tmp_path))
    assert both.code == 2 and "JOB_ID or --all" in both.error
    bad_secret = in_process(
        "dead-letters", "replay", "--all", "--dir", str(tmp_path), "--secret", "plain"
    )
    assert bad_secret.code == 2 and "whsec_" in bad_secret.error


async def test_dead_letters_replay_one(tmp_path: Path) -> None:
    directory = tmp_path / "dl"
    async with open_callback_receiver() as receiver:
        body = write_letter(directory, "job-1", receiver.url)
        write_letter(directory, "job-2", receiver.url)
        replayed = await cli("dead-letters", "replay", "job-1", "--dir", str(directory))
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.decode() == f"delivered job-1 -> {receiver.url}\n"
    [callback] = receiver.received
    assert (callback.method, callback.body) == ("POST", body)
    assert callback.headers["content-type"] == "application/json"
    assert "webhook-signature" not in callback.headers
    assert sorted(path.name for path in directory.iterdir()) == ["job-2.callback", "job-2.json"]


async def test_dead_letters_replay_all_keeps_what_failed(tmp_path: Path) -> None:
    directory = tmp_path / "dl"
    secret = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHM="
    async with open_callback_receiver() as receiver:
        for index, job_id in enumerate(["old", "mid", "new"]):
            write_letter(directory, job_id, receiver.url)
            backdate(directory / f"{job_id}.json", 100 - index)
        write_letter(directory, "no-url", None)
        receiver.fail_next(1, status=500)
        replayed = await cli(
            "dead-letters", "replay", "--all", "--dir", str(directory), "--secret", secret
        )
    assert replayed.returncode == 1
    assert [callback.job_id for callback in receiver.received] == ["old", "mid", "new"]
    assert [callback.status for callback in receiver.received] == [500, 200, 200]
    assert all(
        ft.verify_callback(secret, callback.headers, callback.body)
        for callback in receiver.received
    )
    stderr = replayed.stderr.decode()
    assert f"failed    old -> {receiver.url}: HTTP 500" in stderr
    assert "failed    no-url -> -: no callback URL recorded" in stderr
    assert sorted(path.name for path in directory.iterdir()) == [
        "no-url.json",
        "old.callback",
        "old.json",
    ]
