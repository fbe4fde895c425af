import datetime as dt

import pytest

import funtask_trio as ft
from funtask_trio.testing import make_params, make_params_raw


def test_typed_reads_convert_json_values():
    params = ft.Params({"name": "x", "n": 5.0, "f": 3, "flag": True, "at": "2026-01-01T10:00:00Z"})
    assert params.str("name") == "x"
    assert params.int("n") == 5 and isinstance(params.int("n"), int)
    assert params.float("f") == 3.0 and isinstance(params.float("f"), float)
    assert params.bool("flag") is True
    assert params.time("at") == dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("method", "value"),
    [
        ("int", 3.7),
        ("int", True),
        ("int", "5"),
        ("float", "1.5"),
        ("float", False),
        ("bool", 1),
        ("bool", "true"),
        ("str", 5),
        ("time", "2026-01-01"),
        ("time", "2026-01-01 10:00:00"),
        ("time", "2026-13-01T10:00:00Z"),
        ("time", 0),
    ],
)
def test_ill_typed_values_raise_param_error(method, value):
    params = ft.Params({"key": value})
    with pytest.raises(ft.ParamError) as caught:
        getattr(params, method)("key")
    assert isinstance(caught.value, ValueError)
    assert "key (expected" in str(caught.value)


def test_default_applies_only_to_missing_keys():
    params = ft.Params({"present": "text"})
    assert params.int("missing", default=7) == 7
    assert params.str("missing", default=None) is None
    with pytest.raises(ft.ParamError):
        params.int("present", default=7)
    with pytest.raises(ft.ParamError, match="missing or invalid parameters: missing"):
        params.int("missing")


def test_time_keeps_the_offset_and_is_aware():
    value = ft.Params({"at": "2026-01-01T10:00:00.5+02:00"}).time("at")
    assert value.utcoffset() == dt.timedelta(hours=2)
    assert value.microsecond == 500000


def test_reader_collects_every_error_and_returns_zero_values():
    reader = ft.Params({"limit": "many", "name": "ok"}).reader()
    assert reader.time("since") == dt.datetime(1, 1, 1, tzinfo=dt.UTC)
    assert reader.int("limit") == 0
    assert reader.str("name") == "ok"
    with pytest.raises(ft.ParamError) as caught:
        reader.check()
    assert str(caught.value) == (
        "missing or invalid parameters: since (expected time), limit (expected int)"
    )


def test_reader_check_passes_when_all_reads_succeed():
    reader = ft.Params({"a": 1}).reader()
    assert reader.int("a") == 1
    reader.check()


def test_params_is_a_read_only_mapping_with_raw():
    params = ft.Params({"a": 1})
    assert dict(params) == {"a": 1} and len(params) == 1 and params["a"] == 1
    assert params.raw == {"a": 1}
    with pytest.raises(TypeError):
        params["a"] = 2  # type: ignore[index]


def test_make_params_refuses_what_json_cannot_carry_and_raw_does_not():
    with pytest.raises(ValueError):
        make_params({"when": dt.datetime.now()})
    with pytest.raises(ValueError):
        make_params({"x": float("nan")})
    assert make_params({"t": (1, 2)}).raw == {"t": [1, 2]}
    assert make_params_raw({"when": object}).raw["when"] is object
