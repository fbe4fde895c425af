"""The ``funtask-trio`` command (also ``python -m funtask_trio``).

    funtask-trio serve MODULE:ATTRIBUTE [--host H] [--port P]
    funtask-trio call TASK [key=value ...] [--json OBJECT] [--url URL] [--token TOKEN]
    funtask-trio dead-letters list|show JOB_ID|replay [JOB_ID | --all] [--dir DIR]

Exit codes: 0 success, 1 a failed job or delivery, 2 a usage or connection
error. User mistakes are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import httpx
import trio

from ._callbacks import callback_headers, sign_callback
from ._deadletters import DeadLetter, DeadLetterDir, is_safe_job_id
from ._exceptions import ClientError, ConfigError
from ._server import Server
from ._timefmt import format_running

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_URL = "http://127.0.0.1:8080"


class UsageError(Exception):
    """A user mistake: printed as one line, exit code 2, never a traceback."""


def load_server(spec: str) -> Server:
    """The `Server` named by ``module:attribute`` (the current directory is importable).

    Raises `UsageError` for a malformed spec, a module that can't be
    imported, a missing attribute, or an object that is not a `Server`.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"expected MODULE:ATTRIBUTE (e.g. examples.counter:server), got {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise UsageError(f"cannot import module {module_name!r}: {error}") from None
        raise UsageError(f"importing module {module_name!r} failed: {error}") from None
    except Exception as error:  # the user's module is broken: say how, in one line
        raise UsageError(
            f"importing module {module_name!r} failed: {type(error).__name__}: {error}"
        ) from None
    try:
        server = getattr(module, attribute)
    except AttributeError:
        raise UsageError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(server, Server):
        raise UsageError(f"{spec} is not a funtask_trio.Server (got {type(server).__name__})")
    return server


def default_dead_letter_dir(server_name: str) -> Path:
    """``$XDG_STATE_HOME/funtask-trio/<server>/dead-letters`` (``~/.local/state`` by default)."""
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    safe_name = "".join(char if char.isalnum() or char in "-_." else "_" for char in server_name)
    return Path(state_home) / "funtask-trio" / (safe_name or "server") / "dead-letters"


# -- serve ---------------------------------------------------------------------


class _NotHypercorn(logging.Filter):
    """hypercorn logs through a handler of its own: don't print its records twice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("hypercorn.")


def _configure_logging() -> None:
    if logging.getLogger().handlers:
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_NotHypercorn())


def _banner(server: Server, base: str, *, generated_token: bool) -> str:
    token = server.auth_token
    note = "  (generated; set FUNTASK_AUTH_TOKEN to choose)" if generated_token else ""
    lines = [
        f"funtask server {server.name!r} listening on {base}",
        f"  token:        {token}{note}",
        f"  dead letters: {server.dead_letter_dir}",
    ]
    if server.dashboard:
        lines.append(f"  dashboard:    {base}/dashboard#token={token}")
    if server.tasks:
        # A task with an example runs first time: its example params work.
        with_examples = [task for task in server.tasks.values() if task.example]
        task = min(with_examples or server.tasks.values(), key=lambda task: task.name)
        body = json.dumps({"params": task.example or {}}, separators=(",", ":"))
        lines.append(
            f"  try:          curl -H 'Authorization: Bearer {token}' -d '{body}'"
            f" {base}/run/{task.name}"
        )
    return "\n".join(lines)


def _serve(args: argparse.Namespace) -> int:
    server = load_server(args.server)
    generated_token = not server.auth_token
    if generated_token:
        server.auth_token = secrets.token_urlsafe(24)
    if server.dead_letter_dir is None:
        server.dead_letter_dir = default_dead_letter_dir(server.name)
    server.check_config()  # a configuration problem is reported before anything is logged
    _configure_logging()
    server._own_process()

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(server.serve, args.host, args.port)
            # binds holds the address actually bound: the real port for --port 0.
            base = binds[0] if binds else f"http://{args.host}:{args.port}"
            print(_banner(server, base, generated_token=generated_token), flush=True)

    trio.run(serve)
    return EXIT_OK


# -- call ------------------------------------------------------------------------


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(name)  # NaN and Infinity are not JSON


def parse_value(text: str) -> Any:
    """`text` as JSON when it parses (``5``, ``true``, ``[1]``, ``"x"``), else the string itself."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text


def parse_params(json_text: str | None, assignments: Sequence[str]) -> dict[str, Any]:
    """Params from ``--json`` (an object) overlaid with ``key=value`` items. Raises `UsageError`."""
    params: dict[str, Any] = {}
    if json_text is not None:
        try:
            document = json.loads(json_text, parse_constant=_reject_constant)
        except ValueError as error:
            raise UsageError(f"--json is not valid JSON: {error}") from None
        if not isinstance(document, dict):
            raise UsageError('--json must be a JSON object, e.g. \'{"name": "World"}\'')
        params.update(document)
    for item in assignments:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise UsageError(f"expected key=value, got {item!r}")
        params[key] = parse_value(value)
    return params


def _call_exit_code(error: ClientError) -> int:
    # The call could not be made as asked (unreachable, bad token, task, params): usage.
    if error.status in (0, 400, 401, 404, 413):
        return EXIT_USAGE
    return EXIT_FAILED


def _call(args: argparse.Namespace) -> int:
    from .client import JobRunning, SyncFuntaskClient, TaskBusy

    params = parse_params(args.json, args.params)
    if args.token is None:
        raise UsageError("no token: pass --token or set FUNTASK_AUTH_TOKEN")
    try:
        with SyncFuntaskClient(
            args.url, args.token, timeout=args.connect_timeout, run_timeout=args.timeout
        ) as client:
            answer = client.run(args.task, params, args.job_id)
    except TaskBusy as error:
        current = error.current_job
        print(
            f"funtask-trio: task {args.task!r} is busy with job {current.get('jobId')!r}"
            f" (running {current.get('running', '?')})",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except ClientError as error:
        print(f"funtask-trio: {error}", file=sys.stderr)
        return _call_exit_code(error)
    print(json.dumps(dict(answer.raw), indent=2, ensure_ascii=False))
    if isinstance(answer, JobRunning):
        print(f"funtask-trio: job {answer.job_id!r} is still running", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if answer.success else EXIT_FAILED


# -- dead letters ------------------------------------------------------------------


def _dead_letter_dir(args: argparse.Namespace) -> DeadLetterDir:
    if not args.dir:
        raise UsageError("no dead-letter directory: pass --dir or set FUNTASK_DEAD_LETTER_DIR")
    path = Path(args.dir)
    if not path.is_dir():
        raise UsageError(f"dead-letter directory {str(path)!r} does not exist")
    return DeadLetterDir(path)


def _load_letter(directory: DeadLetterDir, job_id: str) -> DeadLetter:
    if not is_safe_job_id(job_id):
        raise UsageError(f"{job_id!r} is not a valid jobId")
    try:
        return directory.load(job_id)
    except FileNotFoundError:
        raise UsageError(f"no dead letter for job {job_id!r} in {str(directory.path)!r}") from None


def _age(letter: DeadLetter, now: _dt.datetime) -> str:
    return format_running(max((now - letter.created).total_seconds(), 0.0))


def _dead_letters_list(args: argparse.Namespace) -> int:
    letters = _dead_letter_dir(args).pending()
    if not letters:
        print(f"no pending dead letters in {args.dir}", file=sys.stderr)
        return EXIT_OK
    now = _dt.datetime.now(_dt.UTC)
    rows = [("JOB ID", "AGE", "TASK", "CALLBACK URL")] + [
        (letter.job_id, _age(letter, now), letter.task or "-", letter.callback_url or "-")
        for letter in letters
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
            + "  "
            + row[3]
        )
    return EXIT_OK


def _dead_letters_show(args: argparse.Namespace) -> int:
    letter = _load_letter(_dead_letter_dir(args), args.job_id)
    sys.stdout.write(letter.body.decode("utf-8", "replace").rstrip("\n") + "\n")
    return EXIT_OK


def _replay_one(client: httpx.Client, letter: DeadLetter, secret: str | None) -> str | None:
    """POST the letter once; None on a 2xx, else what went wrong."""
    if not letter.callback_url:
        return "no callback URL recorded"
    headers = callback_headers(letter.job_id, letter.body, secret)  # as the server's attempts
    try:
        response = client.post(letter.callback_url, content=letter.body, headers=headers)
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"
    if not response.is_success:
        return f"HTTP {response.status_code}"
    return None


def _dead_letters_replay(args: argparse.Namespace) -> int:
    if args.all == (args.job_id is not None):
        raise UsageError("replay needs a JOB_ID or --all (not both)")
    directory = _dead_letter_dir(args)
    letters = directory.pending() if args.all else [_load_letter(directory, args.job_id)]
    if args.secret is not None:
        try:
            sign_callback(args.secret, "check", 0, b"")
        except ValueError as error:
            raise UsageError(str(error)) from None
    failed = 0
    with httpx.Client(timeout=args.timeout, follow_redirects=False) as client:
        for letter in letters:
            problem = _replay_one(client, letter, args.secret)
            if problem is None:
                directory.remove_sync(letter.job_id)
                print(f"delivered {letter.job_id} -> {letter.callback_url}")
            else:
                failed += 1
                print(
                    f"failed    {letter.job_id} -> {letter.callback_url or '-'}: {problem}",
                    file=sys.stderr,
                )
    if not letters:
        print(f"no pending dead letters in {args.dir}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


# -- parser ------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="funtask-trio",
        description="Serve and call funtask-trio task servers, and recover dead letters.",
        epilog="Exit codes: 0 success, 1 a failed job or delivery, 2 a usage or connection error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve a funtask_trio.Server through hypercorn",
        description="Serve MODULE:ATTRIBUTE (a funtask_trio.Server) with graceful shutdown on"
        " SIGINT/SIGTERM. Without FUNTASK_AUTH_TOKEN a token is generated and printed; without"
        " FUNTASK_DEAD_LETTER_DIR dead letters go to the user's state directory. Prints the"
        " URL actually bound (use --port 0 for a free port).",
    )
    serve.add_argument("server", metavar="MODULE:ATTRIBUTE", help="e.g. examples.counter:server")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=_port, default=8080, help="port to bind (default 8080; 0: any free port)"
    )
    serve.set_defaults(handler=_serve)

    call = commands.add_parser(
        "call",
        help="run a task on a server (sync mode) and print its result",
        description="Run TASK on a funtask server in sync mode and print the result JSON."
        " Each key=value sets a parameter; the value is parsed as JSON when it parses"
        " (5, true, [1,2], null) and is a string otherwise.",
        epilog="Exit codes: 0 the job succeeded, 1 the job failed (or the task is busy, the"
        " server draining, the sync timeout hit), 2 usage error, bad token, unknown task or"
        " server unreachable. Example: funtask-trio call greet name=World",
    )
    call.add_argument("task", metavar="TASK", help="the task's name")
    call.add_argument("params", metavar="key=value", nargs="*", help="a parameter")
    call.add_argument("--json", metavar="OBJECT", help="all parameters as one JSON object")
    call.add_argument(
        "--url",
        default=os.environ.get("FUNTASK_URL") or DEFAULT_URL,
        help=f"the server's base URL (default $FUNTASK_URL or {DEFAULT_URL})",
    )
    call.add_argument(
        "--token",
        default=os.environ.get("FUNTASK_AUTH_TOKEN"),
        help="bearer token (default $FUNTASK_AUTH_TOKEN)",
    )
    call.add_argument("--job-id", help="the jobId to use (default: the server makes one)")
    call.add_argument(
        "--timeout",
        type=_positive_float,
        default=None,
        help="seconds to wait for the result (default: until the server's sync timeout)",
    )
    call.add_argument(
        "--connect-timeout",
        type=_positive_float,
        default=10.0,
        help="seconds to wait for a connection (default 10)",
    )
    call.set_defaults(handler=_call)

    dead_letters = commands.add_parser(
        "dead-letters",
        help="list, show and replay undelivered callback results",
        description="Inspect and redeliver the results that a server could not deliver"
        " to their callback URLs.",
    )
    dead_letters.set_defaults(handler=None, parser=dead_letters)
    actions = dead_letters.add_subparsers(dest="action", metavar="ACTION")
    directory_default = os.environ.get("FUNTASK_DEAD_LETTER_DIR")

    def add_dir(action: argparse.ArgumentParser) -> None:
        action.add_argument(
            "--dir",
            default=directory_default,
            help="the dead-letter directory (default $FUNTASK_DEAD_LETTER_DIR)",
        )

    listing = actions.add_parser(
        "list",
        help="list pending dead letters",
        description="List pending dead letters, oldest first: jobId, age, task, callback URL.",
    )
    add_dir(listing)
    listing.set_defaults(handler=_dead_letters_list)

    show = actions.add_parser(
        "show", help="print a dead letter's result JSON", description="Print the stored result."
    )
    show.add_argument("job_id", metavar="JOB_ID")
    add_dir(show)
    show.set_defaults(handler=_dead_letters_show)

    replay = actions.add_parser(
        "replay",
        help="POST dead letters to their callback URLs once",
        description="POST each letter's stored bytes to its recorded callback URL once"
        " (Content-Type: application/json); a 2xx answer deletes the letter. Exits 1 if any"
        " delivery failed.",
    )
    replay.add_argument("job_id", metavar="JOB_ID", nargs="?", help="the letter to replay")
    replay.add_argument("--all", action="store_true", help="replay every pending letter")
    add_dir(replay)
    replay.add_argument(
        "--secret",
        default=os.environ.get("FUNTASK_CALLBACK_SECRET"),
        help="sign the callbacks as the server does (whsec_...; default $FUNTASK_CALLBACK_SECRET)",
    )
    replay.add_argument(
        "--timeout", type=_positive_float, default=30.0, help="seconds per attempt (default 30)"
    )
    replay.set_defaults(handler=_dead_letters_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    # argparse leaves positionals that follow options unparsed: key=value items of `call`.
    if extras and getattr(args, "handler", None) is _call:
        args.params += [item for item in extras if not item.startswith("-")]
        extras = [item for item in extras if item.startswith("-")]
    if extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    handler = getattr(args, "handler", None)
    if handler is None:
        (getattr(args, "parser", None) or parser).print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(handler(args))
    except (UsageError, ConfigError) as error:
        print(f"funtask-trio: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        print(f"funtask-trio: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILED
