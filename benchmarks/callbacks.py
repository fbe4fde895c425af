"""Callback throughput: 1,000 async jobs over 50 tasks, delivered to a local receiver.

Each of 50 clients owns one task (``greet-0`` ... ``greet-49``) and runs
its share of jobs one after another: ``POST /run/greet-N`` with a
``callbackUrl`` (202), then waits for the result to reach the receiver. A
409 (the task still finishing its previous delivery) is retried after 1 ms
and counted. The receiver answers 200 at once and notes each client port:
distinct ports are the connections the server used, so pooling shows as far
fewer connections than deliveries. The server's CPU time per job (submit,
run, dead letter, delivery, 409s included) comes from /proc. A ``--url``
server must allowlist the receiver: pass ``--receiver-port`` and allow
``http://127.0.0.1:PORT``.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import uuid

import trio

from ._common import (
    Target,
    cpu_seconds,
    describe,
    figure,
    note,
    parse_args,
    parser,
    pin_self,
    target,
)
from ._http import Connection, serve_posts

TASKS = 50
DELIVERY_TIMEOUT_S = 30.0
BUSY_RETRY_S = 0.001


class Receiver:
    """Counts deliveries and client ports; wakes whoever waits for a job's result."""

    def __init__(self) -> None:
        self.ports: set[int] = set()
        self.deliveries = 0
        self.failures = 0
        self.waiting: dict[str, trio.Event] = {}

    def on_request(self, body: bytes, port: int) -> None:
        self.ports.add(port)
        self.deliveries += 1
        result = json.loads(body)
        if not result.get("success"):
            self.failures += 1
        event = self.waiting.pop(result.get("jobId", ""), None)
        if event is not None:
            event.set()


async def deliver_all(
    where: Target, listening: socket.socket, jobs: int, tasks: int
) -> tuple[Receiver, float, int]:
    """Run `jobs` async jobs spread over `tasks` tasks; (receiver, seconds, 409 retries)."""
    receiver = Receiver()
    callback_url = f"http://127.0.0.1:{listening.getsockname()[1]}/results"
    busy = 0
    nonce = uuid.uuid4().hex[:8]

    async def client(task: int, count: int) -> None:
        nonlocal busy
        connection = await Connection.open(where.url)
        try:
            for number in range(count):
                job_id = f"cb-{nonce}-{task}-{number}"
                delivered = receiver.waiting[job_id] = trio.Event()
                document = {"jobId": job_id, "callbackUrl": callback_url, "params": {}}
                while True:
                    response = await connection.post_json(
                        f"/run/greet-{task}", document, where.auth
                    )
                    if response.status == 202:
                        break
                    if response.status != 409:
                        raise RuntimeError(f"/run answered {response.status}: {response.body!r}")
                    busy += 1
                    await trio.sleep(BUSY_RETRY_S)
                with trio.fail_after(DELIVERY_TIMEOUT_S):
                    await delivered.wait()
        finally:
            await connection.aclose()

    listener = trio.SocketListener(trio.socket.from_stdlib_socket(listening))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_posts, listener, receiver.on_request)
        started = time.perf_counter()
        async with trio.open_nursery() as clients:
            for task in range(tasks):
                clients.start_soon(client, task, jobs // tasks + (task < jobs % tasks))
        seconds = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    return receiver, seconds, busy


def main(argv: list[str] | None = None) -> int:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--jobs", type=int, help="async jobs (default 1,000)")
    arguments.add_argument("--tasks", type=int, default=TASKS, help="tasks greet-0 ... (50)")
    arguments.add_argument("--receiver-port", type=int, default=0, help="default: a free one")
    args = parse_args(arguments, argv)
    jobs = args.jobs or (200 if args.quick else 1_000)
    pin_self()
    listening = socket.socket()
    listening.bind(("127.0.0.1", args.receiver_port))
    listening.listen(1024)
    origin = f"http://127.0.0.1:{listening.getsockname()[1]}"
    with target(args, tasks=args.tasks, env={"FUNTASK_BENCH_CALLBACK_ORIGIN": origin}) as where:
        note(describe(where))
        note(f"{jobs} async jobs over {args.tasks} tasks, receiver at {origin}")
        cpu_started = cpu_seconds(where.pid)
        receiver, seconds, busy = trio.run(deliver_all, where, listening, jobs, args.tasks)
        cpu_per_job_us = (cpu_seconds(where.pid) - cpu_started) / jobs * 1e6
    if receiver.failures or receiver.deliveries != jobs:
        note(f"{receiver.deliveries} deliveries for {jobs} jobs, {receiver.failures} failed")
    figure("callbacks.deliveries", receiver.deliveries / seconds, "deliveries/s")
    figure("callbacks.connections", len(receiver.ports), "connections", at_most=args.tasks)
    figure("callbacks.busy_retries", busy, "409s")
    figure("callbacks.cpu_per_job", cpu_per_job_us, "us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
