"""Shared fixtures of the reliability suite."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print a figure line even when pytest captures output (docs/reliability.md quotes them)."""

    def emit(line: str) -> None:
        with capsys.disabled():
            print(f"\n[reliability] {line}")

    return emit
