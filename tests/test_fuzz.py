"""Property-based fuzzing of every route over real HTTP.

Invariants, whatever the request: never a 5xx, never a traceback in a body,
every error body is a JSON object with an ``error`` string, no file appears
outside the dead-letter directory, and afterwards the server is healthy and a
normal ``greet`` succeeds.

``FUNTASK_FUZZ_PROFILE=nightly`` sends 10,000 generated requests; CI sends fewer.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import funtask_trio as ft
from funtask_trio.testing import running_server

TOKEN = "fuzz-token"
settings.register_profile(
    "ci",
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "nightly",
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PROFILE = os.environ.get("FUNTASK_FUZZ_PROFILE", "ci")

TASKS = ["greet", "echo", "fails", "sleepy"]


def build_server(dead_letter_dir: Path) -> ft.Server:
    server = ft.Server(
        "fuzz",
        auth_token=TOKEN,
        dead_letter_dir=dead_letter_dir,
        callback_allowlist=["http://127.0.0.1:9/hooks"],
        callback_retries=1,
        callback_timeout=0.2,
        max_body_size=64 * 1024,
        sync_timeout=2,
    )

    @server.task
    async def greet(run: ft.Run, params: ft.Params) -> ft.Result:
        return ft.ok(f"Hello, {params.str('name', default='World')}!")

    @server.task
    async def echo(run: ft.Run, params: ft.Params) -> ft.Result:
        await run.progress(1, 2, "echoing %s", params.raw)
        return ft.ok().with_data(params.raw)

    @server.task
    async def fails(run: ft.Run, params: ft.Params) -> ft.Result:
        reader = params.reader()
        reader.int("n")
        reader.time("at")
        reader.check()
        raise RuntimeError(params.str("text", default="boom"))

    @server.task
    async def sleepy(run: ft.Run, params: ft.Params) -> ft.Result:
        await trio.sleep(0.01)
        return ft.ok()

    return server


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The fuzz server, served by hypercorn in a thread of its own for the whole module."""
    root = tmp_path_factory.mktemp("fuzz")
    server = build_server(root / "dead-letters")
    handoff: queue.Queue[tuple[str, trio.lowlevel.TrioToken, trio.Event]] = queue.Queue()

    async def serve() -> None:
        stop = trio.Event()
        async with running_server(server) as running:
            handoff.put((running.url, trio.lowlevel.current_trio_token(), stop))
            await stop.wait()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    url, token, stop = handoff.get(timeout=30)
    yield url, root
    trio.from_thread.run_sync(stop.set, trio_token=token)
    thread.join(timeout=30)
    assert not thread.is_alive()


def json_values() -> st.SearchStrategy[object]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=12,
    )


job_ids = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["../escape", "a/b", "/etc/passwd", "..", ".", "a\\b", "x\x00y", "ok-id"]),
    st.integers(),
    st.none(),
)

callback_urls = st.one_of(
    st.none(),
    st.just("http://127.0.0.1:9/hooks/x"),
    st.sampled_from(
        [
            "http://127.0.0.1:9@evil.test/hooks",
            "http://evil.test\\@127.0.0.1:9/hooks",
            "http://127.0.0.1:9/hooks-evil",
            "http://127.0.0.1:9/hooks/../admin",
            "file:///etc/passwd",
            "HTTP://127.0.0.1:9/hooks",
        ]
    ),
    st.text(max_size=30),
)

structured_bodies = st.fixed_dictionaries(
    {},
    optional={
        "jobId": job_ids,
        "callbackUrl": callback_urls,
        "params": st.one_of(st.dictionaries(st.text(max_size=8), json_values()), json_values()),
    },
).map(lambda document: json.dumps(document).encode())

raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.integers(min_value=1, max_value=3000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(min_value=1, max_value=3000).map(
        lambda depth: b'{"params":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"
    ),
    st.sampled_from(
        [
            b'{"params":{"n":1e999999}}',
            b'{"params":{"n":123456789012345678901234567890}}',
            b'{"jobId":"a","jobId":"b"}',
            b'{"params":{"x":NaN}}',
            b"\xff\xfe\x00",
            b'{"params":{"name":"\xed\xa0\x80"}}',
            b'{"jobId":"\\ud800","params":{"name":"\\udfff"}}',
            b'{"jobId":"\\ud800","callbackUrl":"http://127.0.0.1:9/hooks/x"}',
            b"",
            b"null",
        ]
    ),
)

paths = st.one_of(
    st.sampled_from(TASKS + ["nope", "..", "%2e%2e", "greet/extra"]).flatmap(
        lambda task: st.sampled_from([f"/run/{task}", f"/stop/{task}"])
    ),
    st.sampled_from(
        ["/health", "/events", "/livez", "/readyz", "/dashboard", "/result/x", "/", "/run/"]
    ),
    st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#%"),
        max_size=30,
    ).map(lambda text: "/" + text),
)

authorizations = st.one_of(
    st.just(f"Bearer {TOKEN}"),
    st.just(f"bearer {TOKEN}"),
    st.just(f"Bearer  {TOKEN}"),
    st.just("Bearer " + "x" * 10_000),
    st.just(f"Basic {TOKEN}"),
    st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
        max_size=60,
    ),
    st.none(),
)


@settings(settings.get_profile(PROFILE))
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
    path=paths,
    authorization=authorizations,
    body=st.one_of(structured_bodies, raw_bodies),
    content_type=st.sampled_from(
        [None, "application/json", "application/x-www-form-urlencoded", "text/plain"]
    ),
)
def test_no_request_breaks_the_server(live, method, path, authorization, body, content_type):
    url, _ = live
    headers: dict[str, str | bytes] = {}
    if authorization is not None:
        headers["Authorization"] = authorization.encode("latin-1")  # raw bytes on the wire
    if content_type is not None:
        headers["Content-Type"] = content_type
    if path == "/events":
        return  # a stream, checked in test_events.py; here it would only block
    with httpx.Client(base_url=url, timeout=10) as client:
        try:
            response = client.request(method, path, headers=headers, content=body)
        except httpx.LocalProtocolError:
            return  # httpx refuses to send it (e.g. a header it cannot encode)
    assert response.status_code < 500, (response.status_code, response.text)
    assert "Traceback" not in response.text
    if response.status_code >= 400 and method != "HEAD":
        document = response.json()
        assert isinstance(document, dict) and isinstance(document.get("error"), str), document


def test_after_fuzzing_the_server_is_healthy_and_files_stayed_inside(live):
    url, root = live
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/livez").json() == {"status": "ok"}
        greet = client.post(
            "/run/greet", headers={"Authorization": f"Bearer {TOKEN}"}, content=b"{}"
        )
        assert greet.status_code == 200 and greet.json()["message"] == "Hello, World!"
    outside = [
        path
        for path in root.rglob("*")
        if path != root / "dead-letters" and (root / "dead-letters") not in path.parents
    ]
    assert outside == []
