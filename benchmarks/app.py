"""The servers under test: `server` (funtask tasks) and `bare_app` (the stack alone).

``funtask-trio serve benchmarks.app:server`` serves the tasks the benchmarks
call; a server in another language that should be compared needs the same
ones (see README.md): ``greet``, ``greet-0`` ... ``greet-N`` (the same
function under N names, so that N connections never meet a busy task), and
``storm`` (``steps`` progress reports in a loop).

``python -m benchmarks.app bare`` serves `bare_app`: one Quart-Trio route
answering the same JSON as ``greet`` on the same hypercorn (trio worker), the
ceiling that funtask's own work is measured against.

Environment: ``FUNTASK_BENCH_TASKS`` (N, default 16),
``FUNTASK_BENCH_CALLBACK_ORIGIN`` (the callback receiver's origin), and for
tuning experiments ``FUNTASK_BENCH_GC`` (``threshold`` or ``freeze``) and
``FUNTASK_BENCH_LOG_LEVEL`` (e.g. ``WARNING``).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import time
import uuid

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import Response, request
from quart_trio import QuartTrio

import funtask_trio as ft

TASKS = int(os.environ.get("FUNTASK_BENCH_TASKS", "16"))
CALLBACK_ORIGIN = os.environ.get("FUNTASK_BENCH_CALLBACK_ORIGIN")

server = ft.Server(
    "bench",
    callback_allowlist=[CALLBACK_ORIGIN] if CALLBACK_ORIGIN else [],
    # Callbacks go to a local receiver that answers at once; a failure is a bug to see.
    callback_retries=1,
    callback_timeout=10,
)


async def greet(run: ft.Run, params: ft.Params) -> ft.Result:
    """The Go README's greet: the smallest task there is."""
    name = params.str("name", default="World")
    return ft.ok(f"Hello, {name}!").with_data(name=name)


server.task("greet")(greet)
for index in range(TASKS):
    server.task(f"greet-{index}")(greet)


@server.task
async def storm(run: ft.Run, params: ft.Params) -> ft.Result:
    """`steps` progress reports as fast as they go; data carries the loop's own timing."""
    steps = params.int("steps")
    started = time.perf_counter()
    for done in range(1, steps + 1):
        await run.progress(done, steps, "item %d", done)
    seconds = time.perf_counter() - started
    return ft.ok(f"{steps} steps").with_data(steps=steps, seconds=seconds)


def bare_app() -> QuartTrio:
    """A Quart-Trio app with one POST route answering greet's JSON, and nothing else."""
    app = QuartTrio("bare")

    @app.post("/greet")
    async def bare_greet() -> Response:
        await request.get_data()
        body = {
            "jobId": str(uuid.uuid4()),
            "success": True,
            "message": "Hello, World!",
            "duration": "0s",
            "data": {"name": "World"},
        }
        text = json.dumps(body, separators=(",", ":")) + "\n"
        return Response(text, 200, content_type="application/json")

    return app


async def serve_bare() -> None:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(serve, bare_app(), config)
        print(f"bare app listening on {urls[0]}", flush=True)


def _tune() -> None:
    level = os.environ.get("FUNTASK_BENCH_LOG_LEVEL")
    if level:
        logging.getLogger("funtask_trio").setLevel(level)
    tuning = os.environ.get("FUNTASK_BENCH_GC", "")
    if tuning == "threshold":
        gc.set_threshold(20000, 20, 100)
    elif tuning == "freeze":
        gc.collect()
        gc.freeze()


if __name__ != "__main__":  # the funtask server only: the bare app stays the stack as it is
    _tune()

if __name__ == "__main__":
    if sys.argv[1:] != ["bare"]:
        sys.exit("usage: python -m benchmarks.app bare")
    trio.run(serve_bare)
