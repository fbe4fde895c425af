"""The built-in dashboard: one static page inside the package, served with an ETag.

The page is served without auth (it asks for the token itself), so it is
locked down with a Content-Security-Policy that allows only its own inline
script and style, by hash: even a rendering bug could not run injected markup.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources

from quart import Response

_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


def _csp_hash(content: bytes) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(content).digest()).decode() + "'"


def content_security_policy(page: bytes) -> str:
    """A policy allowing exactly the page's inline ``<script>`` and ``<style>`` blocks."""
    sources: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for match in _INLINE.finditer(page):
        sources[match.group(1)].append(_csp_hash(match.group(2)))
    return "; ".join(
        [
            "default-src 'none'",
            "script-src " + (" ".join(sources[b"script"]) or "'none'"),
            "style-src " + (" ".join(sources[b"style"]) or "'none'"),
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


@cache
def _page() -> tuple[bytes, str, str]:
    body = resources.files("funtask_trio").joinpath("dashboard.html").read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return body, etag, content_security_policy(body)


def dashboard_response(if_none_match: str | None) -> Response:
    """The page, or ``304`` when the browser's copy (`if_none_match`) is current."""
    body, etag, policy = _page()
    headers = {
        "ETag": etag,
        "Cache-Control": "no-cache",
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if if_none_match and (
        if_none_match.strip() == "*"
        or etag in [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    ):
        return Response(b"", 304, headers)
    return Response(body, 200, headers, content_type="text/html; charset=utf-8")
