import datetime as dt

import pytest

from funtask_trio._timefmt import format_duration, format_running, format_time, go_duration


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (0.0004, "0s"),
        (0.015, "15ms"),
        (0.0155, "16ms"),
        (1.234, "1.234s"),
        (1.2, "1.2s"),
        (2, "2s"),
        (60, "1m0s"),
        (62.5, "1m2.5s"),
        (3600, "1h0m0s"),
        (3723.004, "1h2m3.004s"),
        (600, "10m0s"),
        (120, "2m0s"),
    ],
)
def test_durations_use_go_notation_rounded_to_the_millisecond(seconds, expected):
    assert format_duration(seconds) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"), [(0.4, "0s"), (2.6, "3s"), (62.2, "1m2s"), (3600, "1h0m0s")]
)
def test_running_times_are_rounded_to_the_second(seconds, expected):
    assert format_running(seconds) == expected


@pytest.mark.parametrize(
    ("nanoseconds", "expected"),
    [(1, "1ns"), (1500, "1.5\u00b5s"), (1_500_000, "1.5ms"), (-2_000_000_000, "-2s")],
)
def test_go_duration_matches_go_below_a_millisecond_and_negative(nanoseconds, expected):
    assert go_duration(nanoseconds) == expected


def test_times_are_rfc3339_utc_with_seconds_precision():
    moment = dt.datetime(2026, 1, 1, 11, 0, 0, 987654, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert format_time(moment) == "2026-01-01T10:00:00Z"
