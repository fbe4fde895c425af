"""Callback delivery: allowlist, retry schedule, signing, and the supervised sender.

Pure parts (allowlist matching, the schedule, Retry-After, signatures) are
plain functions; `CallbackSender` is the thin I/O shell around one shared,
pooled httpx client.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import email.utils
import hashlib
import hmac
import logging
import re
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Final

import httpx
import trio

logger = logging.getLogger("funtask_trio")

RETRY_WAITS_S: Final = (1.0, 5.0, 15.0, 60.0)
LAST_RETRY_WAIT_S: Final = 120.0
MAX_RETRY_AFTER_S: Final = 120.0
SIGNATURE_TOLERANCE_S: Final = 300
MAX_RESPONSE_BYTES: Final = 64 * 1024


def retry_wait(failed_attempts: int) -> float:
    """Seconds to wait after the `failed_attempts`-th failed attempt: 1, 5, 15, 60, then 120."""
    if failed_attempts <= len(RETRY_WAITS_S):
        return RETRY_WAITS_S[failed_attempts - 1]
    return LAST_RETRY_WAIT_S


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), capped at 120."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit alone admits "²", which float() refuses
        seconds = float(value)
    else:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment is None or moment.tzinfo is None:
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


# -- allowlist ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: bytes
    port: int | None
    path: str
    raw_path: str


def _has_dot_segment(raw_path: str) -> bool:
    # Receivers and proxies in front of them (nginx, for one) decode %2F and %5C
    # before resolving dot segments: "/hooks%2F..%2Fadmin" must count as "/admin".
    decoded = urllib.parse.unquote(raw_path)
    return any(segment in (".", "..") for segment in re.split(r"[/\\]", decoded))


def _has_encoded_separator(raw_path: str) -> bool:
    lowered = raw_path.lower()
    return "%2f" in lowered or "%5c" in lowered


def _parse_origin(url: str) -> _Origin | None:
    """`url` as httpx will connect to it, or None when it can never be allowed."""
    if "\\" in url or any(ord(char) < 0x21 or ord(char) == 0x7F for char in url):
        return None
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    if parsed.scheme not in ("http", "https") or not parsed.raw_host or parsed.userinfo:
        return None
    raw_path = parsed.raw_path.split(b"?", 1)[0].decode("ascii", "replace")
    if _has_dot_segment(raw_path):
        return None
    return _Origin(parsed.scheme, parsed.raw_host.lower(), parsed.port, parsed.path, raw_path)


class Allowlist:
    """Callback URL origins (with optional path prefixes) that results may be sent to."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.entries = list(entries)
        self._origins: list[_Origin] = []
        self.problems: list[str] = []
        for entry in self.entries:
            origin = _parse_origin(entry)
            if origin is None or httpx.URL(entry).query or httpx.URL(entry).fragment:
                self.problems.append(
                    f"callback allowlist entry {entry!r} is not an http(s) origin with an"
                    " optional path"
                )
                continue
            self._origins.append(dataclasses.replace(origin, path=origin.path.rstrip("/")))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def allows(self, url: str) -> bool:
        """True when `url` matches an entry: scheme, host and port equal, path under its prefix."""
        target = _parse_origin(url)
        if target is None:
            return False
        for origin in self._origins:
            if (target.scheme, target.host, target.port) != (
                origin.scheme,
                origin.host,
                origin.port,
            ):
                continue
            if not origin.path:
                return True
            if _has_encoded_separator(target.raw_path):
                # "/hooks%2Fx" is one segment to a strict server and "/hooks/x" to a
                # decoding one: under the prefix for only one of them, so refused.
                continue
            if target.path == origin.path or target.path.startswith(origin.path + "/"):
                return True
        return False


# -- signatures (Standard Webhooks) -------------------------------------------


def _secret_key(secret: str) -> bytes:
    if not secret.startswith("whsec_"):
        raise ValueError("callback secret must look like whsec_<base64>")
    try:
        return base64.b64decode(secret[len("whsec_") :], validate=True)
    except binascii.Error:
        raise ValueError("callback secret must look like whsec_<base64>") from None


# Printable ASCII but "%": what a header value carries as is (percent-encoding stays injective).
_HEADER_SAFE: Final = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) != "%")


def webhook_id(job_id: str) -> str:
    """The ``webhook-id`` header for `job_id`: the jobId itself, percent-encoded where needed.

    A header carries printable ASCII only, so other characters (and ``%``)
    are percent-encoded as UTF-8; every other jobId, a UUID included, is sent
    unchanged. The signature covers this value, as receivers see it.
    """
    return urllib.parse.quote(job_id, safe=_HEADER_SAFE, errors="surrogatepass")


def sign_callback(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def callback_headers(job_id: str, body: bytes, secret: str | None) -> dict[str, str]:
    """The headers of one delivery attempt: JSON, plus a fresh signature when `secret` is set."""
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        timestamp = int(time.time())
        message_id = webhook_id(job_id)
        headers["webhook-id"] = message_id
        headers["webhook-timestamp"] = str(timestamp)
        headers["webhook-signature"] = sign_callback(secret, message_id, timestamp, body)
    return headers


def verify_callback(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True when a callback carries a valid Standard Webhooks signature made with `secret`.

    For receivers: pass the request's headers (any case) and its raw body.
    False when a header is missing, the timestamp is more than `tolerance_s`
    seconds off, or no ``v1`` signature matches. Raises `ValueError` for a
    malformed `secret`.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    message_id = lowered.get("webhook-id")
    timestamp_text = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not message_id or not timestamp_text.isdigit() or not signatures:
        return False
    timestamp = int(timestamp_text)
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign_callback(secret, message_id, timestamp, body)
    return any(
        hmac.compare_digest(candidate.encode(), expected.encode())
        for candidate in signatures.split()
    )


# -- delivery -----------------------------------------------------------------


class CallbackSender:
    """POSTs results to callback URLs with retries, through one pooled httpx client.

    `draining` cuts every schedule short: a delivery waiting for its next
    attempt makes it at once, and then stops.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        attempts: int,
        timeout_s: float,
        secret: str | None,
        draining: trio.Event,
    ) -> None:
        self.client = client
        self.attempts = attempts
        self.timeout_s = timeout_s
        self.secret = secret
        self.draining = draining

    async def _attempt(self, job_id: str, task: str, url: str, body: bytes) -> httpx.Response | str:
        """One POST: the response, or the text of the transport failure."""
        try:
            with trio.fail_after(self.timeout_s):
                request = self.client.build_request(
                    "POST", url, content=body, headers=callback_headers(job_id, body, self.secret)
                )
                response = await self.client.send(request, stream=True)
                try:
                    # Only the status matters; a huge or endless answer is not read whole.
                    read = 0
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read > MAX_RESPONSE_BYTES:
                            break
                finally:
                    await response.aclose()
                return response
        except trio.TooSlowError:
            return f"timed out after {self.timeout_s}s"
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as error:
            return f"{type(error).__name__}: {error}"
        except Exception as error:
            # An escaping exception would take down the deliveries nursery (and every
            # other delivery with it); a failed attempt keeps the letter for retry.
            logger.exception(
                "task %s job %s: unexpected error in callback attempt",
                task,
                job_id,
                extra={"task": task, "job_id": job_id},
            )
            return f"{type(error).__name__}: {error}"

    async def deliver(self, job_id: str, task: str, url: str, body: bytes, *, final: bool) -> bool:
        """Deliver `body` until a 2xx (True) or the schedule ends (False).

        `final` (or draining) means a single attempt.
        """
        log_extra = {"task": task, "job_id": job_id}
        attempts = 1 if final else self.attempts
        attempt = 0
        while True:
            attempt += 1
            outcome = await self._attempt(job_id, task, url, body)
            if isinstance(outcome, httpx.Response) and outcome.is_success:
                logger.info(
                    "task %s job %s: callback delivered (attempt %d, HTTP %d)",
                    task,
                    job_id,
                    attempt,
                    outcome.status_code,
                    extra=log_extra,
                )
                return True
            reason = (
                f"HTTP {outcome.status_code}" if isinstance(outcome, httpx.Response) else outcome
            )
            if isinstance(outcome, httpx.Response) and outcome.status_code == 410:
                logger.warning(
                    "task %s job %s: callback receiver answered 410 Gone; giving up,"
                    " dead letter kept",
                    task,
                    job_id,
                    extra=log_extra,
                )
                return False
            if attempt >= attempts or self.draining.is_set():
                logger.error(
                    "task %s job %s: callback failed after %d attempt(s) (%s); dead letter kept",
                    task,
                    job_id,
                    attempt,
                    reason,
                    extra=log_extra,
                )
                return False
            wait = retry_wait(attempt)
            if isinstance(outcome, httpx.Response) and outcome.status_code in (429, 503):
                retry_after = parse_retry_after(outcome.headers.get("Retry-After"))
                if retry_after is not None:
                    wait = retry_after
            logger.warning(
                "task %s job %s: callback attempt %d failed (%s); retrying in %ss",
                task,
                job_id,
                attempt,
                reason,
                wait,
                extra=log_extra,
            )
            with trio.move_on_after(wait):
                await self.draining.wait()
