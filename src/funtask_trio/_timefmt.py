"""Durations and times in the notation the wire protocol uses (Go's)."""

from __future__ import annotations

import datetime as _dt

_UNITS_BELOW_SECOND = ((1_000_000, "ms"), (1_000, "\u00b5s"), (1, "ns"))


def _fraction(value: int, digits: int) -> str:
    """`value` / 10**digits with trailing zeros (and a bare point) dropped."""
    whole, frac = divmod(value, 10**digits)
    if frac == 0:
        return str(whole)
    return f"{whole}.{frac:0{digits}d}".rstrip("0")


def go_duration(nanoseconds: int) -> str:
    """Format like Go's ``time.Duration.String``: ``0s``, ``15ms``, ``1.234s``, ``1h0m0s``."""
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    ns = abs(nanoseconds)
    if ns < 1_000_000_000:
        for size, unit in _UNITS_BELOW_SECOND:
            if ns >= size:
                digits = len(str(size)) - 1
                return f"{sign}{_fraction(ns, digits)}{unit}"
    total_seconds, frac_ns = divmod(ns, 1_000_000_000)
    minutes, seconds = divmod(total_seconds, 60)
    hours, minutes = divmod(minutes, 60)
    text = _fraction(seconds * 1_000_000_000 + frac_ns, 9) + "s"
    if minutes or hours:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text


def format_duration(seconds: float) -> str:
    """A job's duration: rounded to the millisecond, Go notation (``1.234s``)."""
    return go_duration(round(seconds * 1000) * 1_000_000)


def format_running(seconds: float) -> str:
    """A running time or uptime: rounded to the second, Go notation (``1m2s``)."""
    return go_duration(round(seconds) * 1_000_000_000)


def format_time(moment: _dt.datetime) -> str:
    """RFC 3339 in UTC with seconds precision: ``2026-01-01T10:00:00Z``."""
    return moment.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utcnow() -> _dt.datetime:
    """The current wall-clock time, timezone-aware in UTC."""
    return _dt.datetime.now(_dt.UTC)
