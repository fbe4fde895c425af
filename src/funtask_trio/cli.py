"""The ``funtask-trio`` command (also ``python -m funtask_trio``)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from ._exceptions import ConfigError
from ._server import Server

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A user mistake: printed as one line, exit code 2, never a traceback."""


def load_server(spec: str) -> Server:
    """The `Server` named by ``module:attribute`` (the current directory is importable)."""
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
        raise
    try:
        server = getattr(module, attribute)
    except AttributeError:
        raise UsageError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(server, Server):
        raise UsageError(
            f"{spec} is a {type(server).__name__}, not a funtask_trio.Server"
        )
    return server


def default_dead_letter_dir(server_name: str) -> Path:
    """``$XDG_STATE_HOME/funtask-trio/<server>/dead-letters`` (``~/.local/state`` by default)."""
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    safe_name = "".join(char if char.isalnum() or char in "-_." else "_" for char in server_name)
    return Path(state_home) / "funtask-trio" / (safe_name or "server") / "dead-letters"


def _serve(args: argparse.Namespace) -> int:
    server = load_server(args.server)
    generated = False
    if not server.auth_token:
        server.auth_token = secrets.token_urlsafe(24)
        generated = True
    if server.dead_letter_dir is None:
        server.dead_letter_dir = default_dead_letter_dir(server.name)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server._exit_watchdog = True

    async def main() -> None:
        binds = await _start(server, args.host, args.port)
        del binds

    async def _start(server: Server, host: str, port: int) -> list[str]:
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(server.serve, host, port)
            base = binds[0] if binds else f"http://{host}:{port}"
            token = server.auth_token
            lines = [
                f"funtask server {server.name!r} listening on {base}",
                f"  token:        {token}" + ("  (generated; set FUNTASK_AUTH_TOKEN to choose)" if generated else ""),
                f"  dead letters: {server.dead_letter_dir}",
            ]
            if server.dashboard:
                lines.append(f"  dashboard:    {base}/dashboard#token={token}")
            first_task = sorted(server.tasks)[0]
            lines.append(
                f"  try:          curl -H 'Authorization: Bearer {token}' -d '{{\"params\":{{}}}}'"
                f" {base}/run/{first_task}"
            )
            print("\n".join(lines), flush=True)
        return binds

    trio.run(main)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="funtask-trio", description="Serve and call funtask-trio task servers."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve a funtask_trio.Server through hypercorn",
        description="Serve MODULE:ATTRIBUTE (a funtask_trio.Server) with graceful shutdown on"
        " SIGINT/SIGTERM. Without FUNTASK_AUTH_TOKEN a token is generated and printed; without"
        " FUNTASK_DEAD_LETTER_DIR dead letters go to the user's state directory.",
    )
    serve.add_argument("server", metavar="MODULE:ATTRIBUTE", help="e.g. examples.counter:server")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
    serve.set_defaults(handler=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.handler(args))
    except UsageError as error:
        print(f"funtask-trio: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as error:
        print(f"funtask-trio: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        print(f"funtask-trio: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILED
