"""pytest plugin (entry point ``funtask_trio``): fixtures for testing tasks and servers.

Installed with funtask-trio and loaded automatically. The fixtures are
async, so they run under pytest-trio: set ``trio_mode = true`` in the pytest
configuration (or mark each test ``@pytest.mark.trio``).

Fixtures:

``funtask_server``
    The `funtask_trio.Server` under test. Override this fixture in a
    ``conftest.py`` (or a test module), or mark tests with
    ``@pytest.mark.funtask_server("package.module:server")`` (a
    ``module:attribute`` string or a `Server` object). Without either,
    a test using `funtask_client` fails with a message saying so.
``funtask_running_server``
    That server served by a real hypercorn on a free loopback port for the
    length of the test (a `funtask_trio.testing.RunningServer`: ``url``,
    ``token``, ``funtask_client()``). A server without a token gets one, a
    server without a dead-letter directory gets a temporary one, and the
    `callback_receiver`'s origin is added to its callback allowlist; the
    server object is restored after the test.
``funtask_client``
    An `httpx.AsyncClient` pointing at it, sending the bearer token.
``callback_receiver``
    A `funtask_trio.testing.CallbackReceiver` serving on a free loopback
    port: ``.url``, ``.received``, ``.fail_next(n, status=..., retry_after=...)``,
    ``await .wait_for(job_id)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from ._server import Server
from .testing import (
    CallbackReceiver,
    RunningServer,
    configured_for_testing,
    open_callback_receiver,
    running_server,
)

MARKER = "funtask_server"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(server): the funtask_trio.Server that the funtask_client fixture serves,"
        " as 'module:attribute' or a Server object",
    )


def _server_from_marker(spec: object) -> Server:
    if isinstance(spec, Server):
        return spec
    if not isinstance(spec, str):
        pytest.fail(
            f"@pytest.mark.{MARKER} takes 'module:attribute' or a funtask_trio.Server,"
            f" not {type(spec).__name__}",
            pytrace=False,
        )
    from .cli import UsageError, load_server

    try:
        return load_server(spec)
    except UsageError as error:
        pytest.fail(f"@pytest.mark.{MARKER}({spec!r}): {error}", pytrace=False)


@pytest.fixture
def funtask_server(request: pytest.FixtureRequest) -> Server:
    """The server under test, from ``@pytest.mark.funtask_server(...)``; or override it."""
    marker = request.node.get_closest_marker(MARKER)
    if marker is None or not marker.args:
        pytest.fail(
            "funtask_client needs a server: mark the test with"
            f" @pytest.mark.{MARKER}('module:attribute') or override the"
            " funtask_server fixture in conftest.py",
            pytrace=False,
        )
    return _server_from_marker(marker.args[0])


@pytest.fixture
async def callback_receiver() -> AsyncIterator[CallbackReceiver]:
    """A local HTTP endpoint recording callbacks; can be told to fail the next N attempts."""
    async with open_callback_receiver() as receiver:
        yield receiver


@pytest.fixture
async def funtask_running_server(
    funtask_server: Server,
    callback_receiver: CallbackReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[RunningServer]:
    """`funtask_server` served on a free loopback port for the length of the test."""
    dead_letter_dir = tmp_path_factory.mktemp("funtask-dead-letters")
    with configured_for_testing(
        funtask_server,
        dead_letter_dir=dead_letter_dir,
        allow_callbacks_to=[callback_receiver.origin],
    ):
        async with running_server(funtask_server) as running:
            yield running


@pytest.fixture
async def funtask_client(
    funtask_running_server: RunningServer,
) -> AsyncIterator[httpx.AsyncClient]:
    """An authenticated httpx client for the served `funtask_server` (``base_url`` set)."""
    async with funtask_running_server.client() as client:
        yield client
