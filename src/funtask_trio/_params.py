"""Typed, read-only access to a job's ``params``."""

from __future__ import annotations

import builtins
import datetime as _dt
import re
from collections.abc import Iterator, Mapping
from typing import Any, Final, TypeVar, overload

from ._exceptions import ParamError

T = TypeVar("T")


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = _Missing()

# RFC 3339 as Go's time.RFC3339 parses it: a full date, 'T', a time, and a zone.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")


def _as_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise TypeError


def _as_int(value: Any) -> int:
    # JSON has one number type: whole floats (5.0) are ints, booleans are not.
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise TypeError


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError
    return float(value)


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise TypeError


def _as_time(value: Any) -> _dt.datetime:
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise TypeError
    try:
        return _dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        raise TypeError from None


_CONVERTERS: Final = {
    "string": _as_str,
    "int": _as_int,
    "float": _as_float,
    "bool": _as_bool,
    "time": _as_time,
}


class _TypedReads:
    """The typed accessors, shared by `Params` (raises) and `ParamReader` (records)."""

    __slots__ = ()

    def _read(self, key: builtins.str, kind: builtins.str, default: Any) -> Any:
        raise NotImplementedError

    @overload
    def str(self, key: builtins.str) -> builtins.str: ...
    @overload
    def str(self, key: builtins.str, default: T) -> builtins.str | T: ...
    def str(self, key: builtins.str, default: Any = MISSING) -> Any:
        """The string at `key` (a `ParamReader` records an error and returns ``""``)."""
        return self._read(key, "string", default)

    @overload
    def int(self, key: builtins.str) -> builtins.int: ...
    @overload
    def int(self, key: builtins.str, default: T) -> builtins.int | T: ...
    def int(self, key: builtins.str, default: Any = MISSING) -> Any:
        """The integer at `key`; whole floats such as ``5.0`` count, ``3.7`` and booleans don't."""
        return self._read(key, "int", default)

    @overload
    def float(self, key: builtins.str) -> builtins.float: ...
    @overload
    def float(self, key: builtins.str, default: T) -> builtins.float | T: ...
    def float(self, key: builtins.str, default: Any = MISSING) -> Any:
        """The number at `key`, as a float (ints are accepted)."""
        return self._read(key, "float", default)

    @overload
    def bool(self, key: builtins.str) -> builtins.bool: ...
    @overload
    def bool(self, key: builtins.str, default: T) -> builtins.bool | T: ...
    def bool(self, key: builtins.str, default: Any = MISSING) -> Any:
        """The JSON boolean at `key` (no truthy strings or numbers)."""
        return self._read(key, "bool", default)

    @overload
    def time(self, key: builtins.str) -> _dt.datetime: ...
    @overload
    def time(self, key: builtins.str, default: T) -> _dt.datetime | T: ...
    def time(self, key: builtins.str, default: Any = MISSING) -> Any:
        """The RFC 3339 timestamp at `key`, as a timezone-aware `datetime`."""
        return self._read(key, "time", default)


class Params(_TypedReads, Mapping[str, Any]):
    """The request's ``params``: a read-only mapping with typed accessors.

    Each accessor raises `ParamError` (a `ValueError`) when the key is missing
    or its value has the wrong type; ``default=`` makes a missing key optional
    but never excuses a present value of the wrong type.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: Mapping[str, Any] | None = None) -> None:
        self._raw: dict[str, Any] = dict(raw or {})

    @property
    def raw(self) -> dict[str, Any]:
        """The underlying dict, as decoded from JSON."""
        return self._raw

    def __getitem__(self, key: str) -> Any:
        return self._raw[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __repr__(self) -> str:
        return f"Params({self._raw!r})"

    def _read(self, key: builtins.str, kind: builtins.str, default: Any) -> Any:
        if key not in self._raw:
            if default is not MISSING:
                return default
            raise ParamError([(key, kind)])
        try:
            return _CONVERTERS[kind](self._raw[key])
        except TypeError:
            raise ParamError([(key, kind)]) from None

    def reader(self) -> ParamReader:
        """A reader that collects every failed read, for one `ParamError` naming them all."""
        return ParamReader(self)


_ZERO: Final[dict[str, Any]] = {
    "string": "",
    "int": 0,
    "float": 0.0,
    "bool": False,
    "time": _dt.datetime(1, 1, 1, tzinfo=_dt.UTC),
}


class ParamReader(_TypedReads):
    """Reads several parameters, collecting errors instead of raising at the first.

    Each read returns the zero value of its type on error (``""``, ``0``,
    ``0.0``, ``False``, ``datetime(1, 1, 1, tzinfo=UTC)``); `check` then raises
    one `ParamError`: ``missing or invalid parameters: since (expected time),
    limit (expected int)``.
    """

    __slots__ = ("_params", "_problems")

    def __init__(self, params: Params) -> None:
        self._params = params
        self._problems: list[tuple[str, str]] = []

    def _read(self, key: builtins.str, kind: builtins.str, default: Any) -> Any:
        try:
            return self._params._read(key, kind, default)
        except ParamError as error:
            self._problems.extend(error.problems)
            return _ZERO[kind]

    @property
    def errors(self) -> list[tuple[builtins.str, builtins.str]]:
        """The ``(key, expected_type)`` pairs of every failed read so far."""
        return list(self._problems)

    def check(self) -> None:
        """Raise one `ParamError` naming every failed read, if any failed."""
        if self._problems:
            raise ParamError(self._problems)
