"""The built-in dashboard: one static page inside the package, served with an ETag."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from quart import Response


@cache
def _page() -> tuple[bytes, str]:
    body = resources.files("funtask_trio").joinpath("dashboard.html").read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def dashboard_response(if_none_match: str | None) -> Response:
    """The page, or ``304`` when the browser's copy (`if_none_match`) is current."""
    body, etag = _page()
    headers = {
        "ETag": etag,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if if_none_match and etag in [tag.strip() for tag in if_none_match.split(",")]:
        return Response(b"", 304, headers)
    return Response(body, 200, headers, content_type="text/html; charset=utf-8")
