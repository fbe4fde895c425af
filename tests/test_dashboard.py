"""The dashboard through the real stack: hypercorn on a loopback port, Debian's chromium.

Playwright's async API needs asyncio, so these are plain sync tests driving
the sync API, with the Trio server running in a background thread.
"""

from __future__ import annotations

import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from examples import counter
from playwright.sync_api import Browser, Page, expect, sync_playwright

import funtask_trio as ft
from funtask_trio.testing import running_server

TOKEN = "test-token"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The README's picture is refreshed only on request, so a test run leaves the tree clean:
#   FUNTASK_UPDATE_SCREENSHOT=1 make test
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "dashboard.png"
UPDATE_SCREENSHOT = os.environ.get("FUNTASK_UPDATE_SCREENSHOT") == "1"
XSS_DESCRIPTION = '<script>alert("desc")</script><img src=x onerror="alert(1)">'
XSS_MESSAGE = '<img src=x onerror="alert(2)"><script>alert("msg")</script>'


def counter_server(dead_letter_dir: Path, **options: Any) -> ft.Server:
    """The tasks of examples/counter.py, as registered there, on a fresh server."""
    server = ft.Server(
        "counter",
        auth_token=TOKEN,
        dead_letter_dir=dead_letter_dir,
        dashboard=True,
        shutdown_timeout=2,
        **options,
    )
    for task in counter.server.tasks.values():
        server.task(task.name, description=task.description, example=task.example)(task.fn)
    return server


@dataclass
class LiveServer:
    """A `Server` served by `running_server` in a background thread running its own Trio loop."""

    server: ft.Server
    url: str = ""
    _thread: threading.Thread | None = None
    _token: trio.lowlevel.TrioToken | None = None
    _stop: trio.Event | None = None
    _errors: list[BaseException] = field(default_factory=list)

    def start(self) -> None:
        handoff: queue.Queue[str | None] = queue.Queue()

        async def serve() -> None:
            self._stop = trio.Event()
            self._token = trio.lowlevel.current_trio_token()
            async with running_server(self.server) as running:
                handoff.put(running.url)
                await self._stop.wait()

        def main() -> None:
            try:
                trio.run(serve)
            except BaseException as error:  # reported by stop()
                self._errors.append(error)
                handoff.put(None)

        self._thread = threading.Thread(target=main, name="funtask-server", daemon=True)
        self._thread.start()
        url = handoff.get(timeout=15)
        if url is None:
            raise RuntimeError("the server did not start") from self._errors[0]
        self.url = url

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._token is not None and self._stop is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(timeout=15)
        assert not self._thread.is_alive(), "the server did not stop"
        if self._errors:
            raise self._errors[0]

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )


@pytest.fixture
def make_live(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def factory(server: ft.Server | None = None) -> LiveServer:
        live = LiveServer(server or counter_server(tmp_path / "dead-letters"))
        live.start()
        started.append(live)
        return live

    yield factory
    for live in started:
        live.stop()


@pytest.fixture
def live(make_live: Callable[..., LiveServer]) -> LiveServer:
    return make_live()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Session:
    page: Page
    dialogs: list[str]
    page_errors: list[str]
    run_requests: list[str]


@pytest.fixture
def session(browser: Browser) -> Iterator[Session]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(8000)
    recorded = Session(page, [], [], [])

    def on_dialog(dialog: Any) -> None:
        recorded.dialogs.append(dialog.message)
        dialog.dismiss()

    def on_console(message: Any) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            recorded.page_errors.append(message.text)

    def on_request(request: Any) -> None:
        if "/run/" in request.url:
            recorded.run_requests.append(request.url)

    page.on("dialog", on_dialog)
    page.on("console", on_console)
    page.on("request", on_request)
    page.on("pageerror", lambda error: recorded.page_errors.append(str(error)))
    yield recorded
    context.close()
    assert recorded.page_errors == []


def sign_in(page: Page, live: LiveServer) -> None:
    page.goto(f"{live.url}/dashboard")
    page.get_by_test_id("token-input").fill(TOKEN)
    page.get_by_test_id("token-submit").click()
    expect(page.get_by_test_id("card-greet")).to_be_visible()
    expect(page.get_by_test_id("conn-status")).to_have_text("live")


# -- HTTP -------------------------------------------------------------------


def test_dashboard_is_served_without_auth_with_etag_and_304(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, timeout=10) as client:
        first = client.get("/dashboard")
        assert first.status_code == 200
        assert first.headers["content-type"].startswith("text/html")
        assert 'data-testid="token-input"' in first.text
        etag = first.headers["etag"]
        policy = first.headers["content-security-policy"]
        assert "script-src 'sha256-" in policy and "unsafe-inline" not in policy

        again = client.get("/dashboard", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == etag

        stale = client.get("/dashboard", headers={"If-None-Match": '"not-the-etag"'})
        assert stale.status_code == 200
        assert stale.content == first.content

        assert client.get("/health").status_code == 401  # the data behind it is not open


# -- sign-in ----------------------------------------------------------------


@pytest.mark.browser
def test_token_shows_cards_sorted_by_name_with_counts(live: LiveServer, session: Session) -> None:
    page = session.page
    page.goto(f"{live.url}/dashboard")
    expect(page.get_by_test_id("token-input")).to_be_visible()
    expect(page.get_by_test_id("card-greet")).to_have_count(0)

    page.get_by_test_id("token-input").fill(TOKEN)
    page.get_by_test_id("token-submit").click()

    cards = page.locator('[data-testid^="card-"]')
    expect(cards).to_have_count(3)
    names = cards.evaluate_all("cards => cards.map(card => card.dataset.testid)")
    assert names == ["card-countdown", "card-fail-demo", "card-greet"]
    expect(page.get_by_test_id("server-name")).to_have_text("counter")
    expect(page.get_by_test_id("desc-greet")).to_have_text("Returns a greeting")
    expect(page.get_by_test_id("count-healthy")).to_have_text("3 healthy")
    expect(page.get_by_test_id("badge-greet")).to_have_text("idle")
    expect(page.get_by_test_id("conn-status")).to_have_text("live")
    assert page.evaluate("sessionStorage.length") == 1


@pytest.mark.browser
def test_wrong_token_is_rejected_with_an_error(live: LiveServer, session: Session) -> None:
    page = session.page
    page.goto(f"{live.url}/dashboard")
    page.get_by_test_id("token-input").fill("not-the-token")
    page.get_by_test_id("token-submit").click()

    expect(page.get_by_test_id("token-error")).to_contain_text("rejected")
    expect(page.get_by_test_id("card-greet")).to_have_count(0)
    assert page.evaluate("sessionStorage.length") == 0


@pytest.mark.browser
def test_token_fragment_signs_in_and_leaves_the_address_bar(
    live: LiveServer, session: Session
) -> None:
    page = session.page
    page.goto(f"{live.url}/dashboard#token={TOKEN}")

    expect(page.get_by_test_id("card-greet")).to_be_visible()
    assert page.evaluate("location.hash") == ""
    assert TOKEN not in page.url
    page.reload()  # the token lives on in the tab's sessionStorage
    expect(page.get_by_test_id("card-greet")).to_be_visible()


@pytest.mark.browser
def test_a_401_later_returns_to_the_token_screen(live: LiveServer, session: Session) -> None:
    page = session.page
    sign_in(page, live)
    page.route(
        "**/run/greet", lambda route: route.fulfill(status=401, json={"error": "unauthorized"})
    )

    page.get_by_test_id("run-greet").click()

    expect(page.get_by_test_id("token-error")).to_contain_text("401")
    expect(page.get_by_test_id("token-input")).to_be_visible()
    expect(page.get_by_test_id("card-greet")).to_have_count(0)
    assert page.evaluate("sessionStorage.length") == 0


# -- running tasks ----------------------------------------------------------


@pytest.mark.browser
def test_run_greet_shows_its_result(live: LiveServer, session: Session) -> None:
    page = session.page
    sign_in(page, live)

    page.get_by_test_id("run-greet").click()

    expect(page.get_by_test_id("result-greet")).to_contain_text("Hello, World!")
    expect(page.get_by_test_id("toast")).to_contain_text("Hello, World!")
    expect(page.get_by_test_id("timing-greet")).to_contain_text("Completed")
    assert session.run_requests == [f"{live.url}/run/greet"]


@pytest.mark.browser
def test_edited_params_are_sent(live: LiveServer, session: Session) -> None:
    page = session.page
    sign_in(page, live)
    params = page.get_by_test_id("params-greet")
    assert '"name": "World"' in params.input_value()

    params.fill('{"name": "Trio"}')
    page.get_by_test_id("run-greet").click()

    expect(page.get_by_test_id("result-greet")).to_contain_text("Hello, Trio!")
    page.get_by_test_id("tab-history-greet").click()
    row = page.get_by_test_id("history-row-greet").first
    expect(row).to_contain_text("Hello, Trio!")
    row.locator("summary").click()
    expect(row).to_contain_text("jobId")
    expect(row).to_contain_text("duration")


@pytest.mark.browser
def test_invalid_params_json_is_refused_without_a_request(
    live: LiveServer, session: Session
) -> None:
    page = session.page
    sign_in(page, live)

    page.get_by_test_id("params-greet").fill('{"name": ')
    page.get_by_test_id("run-greet").click()

    expect(page.get_by_test_id("toast")).to_contain_text("invalid JSON")
    page.wait_for_timeout(300)
    assert session.run_requests == []
    expect(page.get_by_test_id("result-greet")).to_contain_text("No runs yet")


@pytest.mark.browser
def test_countdown_progress_advances_then_stop_cancels_it(
    live: LiveServer, session: Session
) -> None:
    page = session.page
    sign_in(page, live)
    # Other cards in their other states, for the screenshot.
    page.get_by_test_id("run-greet").click()
    page.get_by_test_id("run-fail-demo").click()
    expect(page.get_by_test_id("result-greet")).to_contain_text("Hello, World!")
    expect(page.get_by_test_id("badge-fail-demo")).to_have_text("error")
    page.get_by_test_id("params-countdown").fill('{"start": 10, "interval": 0.3}')
    page.get_by_test_id("run-countdown").click()

    progress = page.get_by_test_id("progress-countdown")
    expect(progress).to_have_attribute("aria-valuenow", re.compile("^[1-3]$"))
    first = int(progress.get_attribute("aria-valuenow") or 0)
    expect(page.get_by_test_id("badge-countdown")).to_have_text("running")
    expect(page.get_by_test_id("count-running")).to_have_text("1 running")
    page.wait_for_function(
        "first => Number(document.querySelector('[data-testid=progress-countdown]')"
        ".getAttribute('aria-valuenow')) > first",
        arg=first,
    )
    expect(page.get_by_test_id("step-countdown")).to_have_text(re.compile(r"^\d+/10 - T-\d+$"))
    expect(page.get_by_test_id("timing-countdown")).to_contain_text("Running for 1s")
    page.get_by_test_id("toast").click()  # dismissed, so it does not cover the cards
    page.wait_for_timeout(400)  # the bar's width transition settles
    shot = page.screenshot(path=str(SCREENSHOT) if UPDATE_SCREENSHOT else None)
    assert shot.startswith(b"\x89PNG")

    page.get_by_test_id("stop-countdown").click()

    expect(page.get_by_test_id("badge-countdown")).to_have_text("error")
    expect(page.get_by_test_id("error-code-countdown")).to_have_text("cancelled")
    expect(page.get_by_test_id("progress-countdown")).to_be_hidden()
    expect(page.get_by_test_id("stop-countdown")).to_be_disabled()
    expect(page.get_by_test_id("timing-countdown")).to_contain_text("Failed")


@pytest.mark.browser
def test_busy_task_shows_the_409_text(live: LiveServer, session: Session) -> None:
    page = session.page
    sign_in(page, live)
    thread = threading.Thread(
        target=lambda: httpx.post(
            f"{live.url}/run/countdown",
            json={"params": {"start": 1, "interval": 30}},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        ),
        daemon=True,
    )
    thread.start()
    expect(page.get_by_test_id("badge-countdown")).to_have_text("running")

    page.get_by_test_id("run-countdown").click()

    expect(page.get_by_test_id("toast")).to_contain_text("Task is busy with a different job")
    page.get_by_test_id("stop-countdown").click()
    expect(page.get_by_test_id("badge-countdown")).to_have_text("error")
    thread.join(timeout=10)


@pytest.mark.browser
def test_failing_task_shows_error_badge_code_and_step(live: LiveServer, session: Session) -> None:
    page = session.page
    sign_in(page, live)

    page.get_by_test_id("run-fail-demo").click()

    expect(page.get_by_test_id("badge-fail-demo")).to_have_text("error")
    expect(page.get_by_test_id("error-code-fail-demo")).to_have_text("db_error")
    expect(page.get_by_test_id("result-fail-demo")).to_contain_text(
        "connection refused to db.example.com"
    )
    expect(page.get_by_test_id("error-step-fail-demo")).to_contain_text(
        "connecting to the database"
    )
    expect(page.get_by_test_id("count-error")).to_have_text("1 error")
    expect(page.get_by_test_id("toast")).to_contain_text("db_error")


@pytest.mark.browser
def test_curl_tab_builds_the_command_and_copies_it(live: LiveServer, session: Session) -> None:
    page = session.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.url)
    sign_in(page, live)
    page.get_by_test_id("params-greet").fill('{"name": "O\'Brien"}')

    page.get_by_test_id("tab-curl-greet").click()

    curl = page.get_by_test_id("curl-greet")
    expect(curl).to_be_visible()
    expect(page.get_by_test_id("params-greet")).to_be_hidden()
    text = curl.inner_text()
    assert f"{live.url}/run/greet" in text
    assert "Authorization: Bearer $FUNTASK_AUTH_TOKEN" in text
    assert """-d '{"params":{"name":"O'\\''Brien"}}'""" in text
    assert TOKEN not in text

    page.get_by_test_id("copy-curl-greet").click()

    expect(page.get_by_test_id("toast")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == curl.text_content()


# -- robustness -------------------------------------------------------------


@pytest.mark.browser
def test_server_strings_render_as_literal_text(
    make_live: Callable[..., LiveServer], tmp_path: Path, session: Session
) -> None:
    server = ft.Server(
        "<b>evil</b>", auth_token=TOKEN, dead_letter_dir=tmp_path / "dl", dashboard=True
    )

    @server.task(
        "xss", description=XSS_DESCRIPTION, example={"html": "<img src=x onerror=alert(3)>"}
    )
    async def xss(run: ft.Run, params: ft.Params) -> ft.Result:
        await run.step("<img src=x onerror=alert(4)>")
        return ft.ok(XSS_MESSAGE)

    live = make_live(server)
    page = session.page
    page.goto(f"{live.url}/dashboard#token={TOKEN}")
    expect(page.get_by_test_id("card-xss")).to_be_visible()
    page.get_by_test_id("run-xss").click()
    expect(page.get_by_test_id("result-xss")).to_contain_text(XSS_MESSAGE)
    page.get_by_test_id("tab-history-xss").click()
    page.get_by_test_id("history-row-xss").first.locator("summary").click()

    expect(page.get_by_test_id("desc-xss")).to_have_text(XSS_DESCRIPTION)
    expect(page.get_by_test_id("server-name")).to_have_text("<b>evil</b>")
    expect(page.get_by_test_id("history-row-xss").first).to_contain_text(XSS_MESSAGE)
    assert "<img src=x onerror=alert(3)>" in page.get_by_test_id("params-xss").input_value()
    assert page.locator("#app img, #app script, #cards b").count() == 0
    assert page.evaluate("document.getElementById('server-name').childElementCount") == 0
    page.wait_for_timeout(300)
    assert session.dialogs == []


@pytest.mark.browser
def test_updates_keep_typing_tabs_and_expanded_rows(live: LiveServer, session: Session) -> None:
    page = session.page
    sign_in(page, live)
    page.get_by_test_id("run-greet").click()
    expect(page.get_by_test_id("result-greet")).to_contain_text("Hello, World!")
    page.get_by_test_id("tab-history-greet").click()
    page.get_by_test_id("history-row-greet").first.locator("summary").click()
    params = page.get_by_test_id("params-fail-demo")
    params.click()
    params.press("Control+a")
    params.type('{"draft": tr')

    with live.client() as client:  # changes that push new snapshots while the user types
        for _ in range(3):
            client.post("/run/greet", json={"params": {"name": "Again"}})
        client.post("/run/fail-demo")

    expect(page.get_by_test_id("history-row-greet")).to_have_count(4)
    expect(page.get_by_test_id("badge-fail-demo")).to_have_text("error")
    assert params.input_value() == '{"draft": tr'
    assert page.evaluate("document.activeElement.dataset.testid") == "params-fail-demo"
    params.type("ue}")
    assert params.input_value() == '{"draft": true}'
    expect(page.get_by_test_id("curl-greet")).to_be_hidden()
    expect(page.get_by_test_id("history-greet")).to_be_visible()
    rows = page.get_by_test_id("history-row-greet")
    assert rows.evaluate_all("rows => rows.map(row => row.open)") == [False, False, False, True]


@pytest.mark.browser
def test_polls_health_while_the_event_stream_is_down(live: LiveServer, session: Session) -> None:
    page = session.page
    page.route(re.compile(r"/events\?"), lambda route: route.abort())
    page.goto(f"{live.url}/dashboard#token={TOKEN}")
    expect(page.get_by_test_id("card-greet")).to_be_visible()
    expect(page.get_by_test_id("conn-status")).to_have_text("polling")

    with live.client() as client:
        client.post("/run/greet", json={"params": {"name": "Poller"}})

    expect(page.get_by_test_id("result-greet")).to_contain_text("Hello, Poller!", timeout=5000)
    page.unroute(re.compile(r"/events\?"))
    expect(page.get_by_test_id("conn-status")).to_have_text("live", timeout=8000)


@pytest.mark.browser
def test_phone_width_does_not_overflow(live: LiveServer, session: Session) -> None:
    page = session.page
    page.set_viewport_size({"width": 375, "height": 812})
    sign_in(page, live)
    page.get_by_test_id("run-fail-demo").click()
    expect(page.get_by_test_id("badge-fail-demo")).to_have_text("error")
    page.get_by_test_id("tab-curl-greet").click()
    page.get_by_test_id("tab-history-fail-demo").click()
    page.get_by_test_id("history-row-fail-demo").first.locator("summary").click()

    boxes = page.locator('[data-testid^="card-"]').evaluate_all(
        "cards => cards.map(card => card.getBoundingClientRect().toJSON())"
    )
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert page.evaluate("document.body.scrollWidth <= window.innerWidth")
    assert all(box["right"] <= 375 for box in boxes)
    assert [box["top"] for box in boxes] == sorted(box["top"] for box in boxes)  # stacked
    assert len({box["left"] for box in boxes}) == 1
