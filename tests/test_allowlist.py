"""Pure callback logic: allowlist, retry schedule, Retry-After, Standard Webhooks signatures."""

from __future__ import annotations

import base64
import email.utils
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

import funtask_trio as ft
from funtask_trio._callbacks import (
    Allowlist,
    parse_retry_after,
    retry_wait,
    sign_callback,
    verify_callback,
    webhook_id,
)

ALLOWLIST = Allowlist(
    [
        "http://hooks.example.com",
        "https://api.example.com/hooks",
        "http://127.0.0.1:9000",
        "http://[::1]:9000/cb/",
        "http://bücher.example",
    ]
)


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com",
        "http://hooks.example.com/",
        "http://hooks.example.com/any/path?q=1#frag",
        "HTTP://HOOKS.Example.COM/x",  # scheme and host compare case-insensitively
        "http://hooks.example.com:80/x",  # the default port is the same origin
        "http://hooks.example.com:/x",
        "https://api.example.com/hooks",
        "https://api.example.com/hooks/",
        "https://api.example.com/hooks/job/42",
        "https://api.example.com/hooks?token=1",
        "https://api.example.com:443/hooks/x",
        "http://127.0.0.1:9000/done",
        "http://[::1]:9000/cb",  # the entry's trailing slash is not required
        "http://[::1]:9000/cb/x",
        "http://xn--bcher-kva.example/x",  # IDNA: the punycode and the Unicode forms match
        "http://bücher.example/x",
        "http://BÜCHER.example/x",
    ],
)
def test_allowlist_allows_urls_within_an_entry(url: str) -> None:
    assert ALLOWLIST.allows(url)


@pytest.mark.parametrize(
    "url",
    [
        # scheme
        "https://hooks.example.com/x",
        "ftp://hooks.example.com/x",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "//hooks.example.com/x",
        "hooks.example.com/x",
        # host
        "http://evil.example.com/x",
        "http://hooks.example.com.evil.com/x",
        "http://evilhooks.example.com/x",
        "http://sub.hooks.example.com/x",
        "http://hooks.example.com./x",  # trailing dot: a different name to httpx, refused
        "http://localhost:9000/x",
        "http://127.1:9000/x",
        "http://0x7f.0.0.1:9000/x",
        "http://hooks%2eexample.com/x",
        # port
        "http://hooks.example.com:8080/x",
        "http://127.0.0.1/x",
        "http://127.0.0.1:9001/x",
        "http://[::1]:9001/cb",
        # userinfo, and URLs that smuggle another host past a naive parser
        "http://user:pass@hooks.example.com/x",
        "http://user@hooks.example.com/x",
        "http://:@hooks.example.com/x",
        "http://hooks.example.com@evil.com/x",
        "http://hooks.example.com:80@evil.com/x",
        "http://evil.com#@hooks.example.com/x",
        "http://evil.com?@hooks.example.com/x",
        "http://evil.com\\@hooks.example.com/x",
        "http://hooks.example.com\\@evil.com/x",
        "http://hooks.example.com\\.evil.com/x",
        "http:\\\\hooks.example.com\\x",
        # whitespace and control characters
        " http://hooks.example.com/x",
        "http://hooks.example.com/x ",
        "http://hooks.example.com/x\n",
        "http://hooks.example.com/x\tx",
        "http://hooks.example.com/\x00",
        # path prefix at a segment boundary
        "https://api.example.com/hooks-evil",
        "https://api.example.com/hooksx",
        "https://api.example.com/hook",
        "https://api.example.com/",
        "https://api.example.com/HOOKS/x",  # paths are case-sensitive
        "https://api.example.com//hooks/x",
        "https://api.example.com/hooks;evil",
        "http://[::1]:9000/cbx",
        # dot segments, literal or encoded, and encoded separators
        "https://api.example.com/hooks/../admin",
        "https://api.example.com/hooks/./../admin",
        "https://api.example.com/hooks/%2e%2e/admin",
        "https://api.example.com/hooks/%2E%2E/admin",
        "https://api.example.com/hooks/.%2e/admin",
        "https://api.example.com/hooks%2F..%2Fadmin",
        "https://api.example.com/hooks/..%2fadmin",
        "https://api.example.com/hooks%5C..%5Cadmin",
        "https://api.example.com/hooks%2Fx",
        "https://api.example.com/hooks%5cx",
        # not URLs at all
        "",
        "not a url",
        "http://",
        "http://hooks.example.com:99999/x",
        "http://[::1/x",
    ],
)
def test_allowlist_refuses_urls_outside_every_entry(url: str) -> None:
    assert not ALLOWLIST.allows(url)


def test_dot_segments_are_refused_even_under_an_origin_only_entry() -> None:
    # Harmless for the origin itself, but never a URL anyone needs to send.
    assert not ALLOWLIST.allows("http://hooks.example.com/a/%2e%2e/b")


def test_encoded_separators_are_allowed_under_an_origin_only_entry() -> None:
    assert ALLOWLIST.allows("http://hooks.example.com/a%2Fb")


def test_entry_path_matches_percent_encoded_and_literal_forms_alike() -> None:
    allowlist = Allowlist(["https://h.example/ünï"])
    assert allowlist.allows("https://h.example/%C3%BCn%C3%AF/x")
    assert allowlist.allows("https://h.example/%c3%bcn%c3%af/x")
    assert allowlist.allows("https://h.example/ünï")
    assert not allowlist.allows("https://h.example/ünïx")


def test_empty_allowlist_is_falsy_and_allows_nothing() -> None:
    allowlist = Allowlist([])
    assert not allowlist
    assert allowlist.problems == []
    assert not allowlist.allows("http://hooks.example.com/")
    assert ALLOWLIST


@pytest.mark.parametrize(
    "entry",
    [
        "ftp://hooks.example.com",
        "hooks.example.com",
        "not a url",
        "http://user@hooks.example.com",
        "http://user:pw@hooks.example.com",
        "http://hooks.example.com?x=1",
        "http://hooks.example.com#fragment",
        "http://hooks.example.com/a/%2e%2e/b",
        "http://hooks.example.com\\x",
        " http://hooks.example.com",
    ],
)
def test_malformed_allowlist_entries_are_config_problems(entry: str) -> None:
    allowlist = Allowlist(["http://ok.example.com", entry])
    assert allowlist.problems == [
        f"callback allowlist entry {entry!r} is not an http(s) origin with an optional path"
    ]
    assert allowlist.allows("http://ok.example.com/x")


def test_server_startup_lists_allowlist_problems(make_server: Callable[..., ft.Server]) -> None:
    server = make_server(callback_allowlist=["ftp://x"], callback_secret="not-a-whsec")

    @server.task
    async def noop(run: ft.Run, params: ft.Params) -> ft.Result:
        return ft.ok()

    with pytest.raises(ft.ConfigError) as raised:
        server.check_config()
    text = str(raised.value)
    assert "'ftp://x'" in text and "whsec_" in text


@given(st.text(max_size=60))
def test_allows_never_raises(url: str) -> None:
    ALLOWLIST.allows(url)


# -- retry schedule and Retry-After --------------------------------------------


@pytest.mark.parametrize(
    ("failed_attempts", "wait"),
    [(1, 1.0), (2, 5.0), (3, 15.0), (4, 60.0), (5, 120.0), (6, 120.0), (100, 120.0)],
)
def test_retry_wait_follows_the_protocol_schedule(failed_attempts: int, wait: float) -> None:
    assert retry_wait(failed_attempts) == wait


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 10 ", 10.0),
        ("0", 0.0),
        ("120", 120.0),
        ("121", 120.0),  # capped
        ("999999999999999999999999999999", 120.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),  # delta-seconds are whole numbers
        ("1e3", None),
        ("²", None),  # str.isdigit() says yes; float() says no
        ("١٢", None),  # Arabic-Indic digits: not HTTP delta-seconds
    ],
)
def test_parse_retry_after_delta_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_parse_retry_after_http_date() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now + 3600, usegmt=True), now=now) == 120.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 0.0
    assert parse_retry_after("Wed, 99 Foo 2015 07:28:00 GMT", now=now) is None


@given(st.text(max_size=40))
def test_parse_retry_after_never_raises_and_stays_within_the_cap(header: str) -> None:
    seconds = parse_retry_after(header)
    assert seconds is None or 0.0 <= seconds <= 120.0


# -- signatures ---------------------------------------------------------------------

# The Standard Webhooks specification's published test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def vector_headers(**overrides: str) -> dict[str, str]:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    headers.update(overrides)
    return headers


def test_sign_callback_reproduces_the_standard_webhooks_vector() -> None:
    assert (
        sign_callback(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE
    )


def test_verify_callback_accepts_the_vector_and_is_exported() -> None:
    assert ft.verify_callback is verify_callback
    assert verify_callback(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP)


def test_verify_callback_reads_headers_in_any_case() -> None:
    headers = {name.title(): value for name, value in vector_headers().items()}
    assert "Webhook-Signature" in headers
    assert verify_callback(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP + 10)


def test_verify_callback_accepts_any_of_several_signatures() -> None:
    rotated = "v1,bm90IHRoZSByaWdodCBzaWduYXR1cmUgYXQgYWxs " + VECTOR_SIGNATURE
    headers = vector_headers(**{"webhook-signature": rotated})
    assert verify_callback(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (vector_headers(), b'{"test": 2432232315}'),
        (vector_headers(), VECTOR_BODY + b"\n"),
        (vector_headers(**{"webhook-id": "msg_other"}), VECTOR_BODY),
        (vector_headers(**{"webhook-timestamp": str(VECTOR_TIMESTAMP + 1)}), VECTOR_BODY),
        (vector_headers(**{"webhook-signature": "v1,AAAA"}), VECTOR_BODY),
        (
            vector_headers(**{"webhook-signature": VECTOR_SIGNATURE.replace("v1,", "v2,")}),
            VECTOR_BODY,
        ),
        (vector_headers(**{"webhook-signature": ""}), VECTOR_BODY),
        (vector_headers(**{"webhook-timestamp": "soon"}), VECTOR_BODY),
        (vector_headers(**{"webhook-timestamp": "-1614265330"}), VECTOR_BODY),
        (
            {"webhook-timestamp": str(VECTOR_TIMESTAMP), "webhook-signature": VECTOR_SIGNATURE},
            VECTOR_BODY,
        ),
        ({"webhook-id": VECTOR_ID, "webhook-signature": VECTOR_SIGNATURE}, VECTOR_BODY),
        ({}, VECTOR_BODY),
    ],
)
def test_verify_callback_rejects_anything_altered_or_missing(
    headers: dict[str, str], body: bytes
) -> None:
    assert not verify_callback(VECTOR_SECRET, headers, body, now=VECTOR_TIMESTAMP)


def test_verify_callback_rejects_another_secret() -> None:
    other = "whsec_" + base64.b64encode(b"a different key").decode()
    assert not verify_callback(other, vector_headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP)


@pytest.mark.parametrize("offset", [-301, 301, 10_000])
def test_verify_callback_rejects_timestamps_outside_the_tolerance(offset: int) -> None:
    now = VECTOR_TIMESTAMP + offset
    assert not verify_callback(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=now)
    assert verify_callback(
        VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=now, tolerance_s=abs(offset)
    )


@pytest.mark.parametrize(
    "secret", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_@@"]
)
def test_malformed_secrets_raise_value_error(secret: str) -> None:
    with pytest.raises(ValueError, match="whsec_"):
        sign_callback(secret, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
    with pytest.raises(ValueError, match="whsec_"):
        verify_callback(secret, vector_headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP)


@given(st.binary(max_size=200), st.text(min_size=1, max_size=30), st.integers(0, 2**40))
def test_sign_then_verify_round_trips(body: bytes, message_id: str, timestamp: int) -> None:
    headers = {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_callback(VECTOR_SECRET, message_id, timestamp, body),
    }
    assert verify_callback(VECTOR_SECRET, headers, body, now=timestamp)


@pytest.mark.parametrize(
    ("job_id", "header"),
    [
        ("3f2c1d7e-0c1b-4a39-9a57-1b2d3c4e5f60", "3f2c1d7e-0c1b-4a39-9a57-1b2d3c4e5f60"),
        ("a:b/c?d#e=f&g", "a:b/c?d#e=f&g"),
        ("with space", "with%20space"),
        ("50%", "50%25"),
        ("ünï", "%C3%BCn%C3%AF"),
        ("x\r\ny", "x%0D%0Ay"),
        ("\ud800", "%ED%A0%80"),
    ],
)
def test_webhook_id_is_the_job_id_percent_encoded_where_a_header_cannot_carry_it(
    job_id: str, header: str
) -> None:
    assert webhook_id(job_id) == header


@given(st.text(max_size=30), st.text(max_size=30))
def test_webhook_ids_are_printable_ascii_and_distinct_per_job_id(first: str, second: str) -> None:
    assert all(0x21 <= ord(char) <= 0x7E for char in webhook_id(first))
    if first != second:
        assert webhook_id(first) != webhook_id(second)
