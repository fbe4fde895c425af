"""Shared fixtures: servers built per test, served for real on a loopback port."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import funtask_trio as ft

TOKEN = "test-token"


@pytest.fixture
def dead_letter_dir(tmp_path: Path) -> Path:
    return tmp_path / "dead-letters"


@pytest.fixture
def make_server(dead_letter_dir: Path) -> Callable[..., ft.Server]:
    """A factory for fresh servers with a token and a dead-letter dir (override any option)."""

    def factory(name: str = "test-server", **options: Any) -> ft.Server:
        options.setdefault("auth_token", TOKEN)
        options.setdefault("dead_letter_dir", dead_letter_dir)
        return ft.Server(name, **options)

    return factory
