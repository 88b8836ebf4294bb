"""The test harness: the Firestore emulator for the session, and a fresh project per test.

When FIRESTORE_EMULATOR_HOST is unset, the official emulator is started here (and stopped at
the end; in each worker when `make test` runs the suite in parallel); if it cannot start,
every test that needs it errors loudly instead of skipping. Tests keep figure lines with
`report`, printed in the summary.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from google.cloud import firestore
from test_utils.prefixer import Prefixer
from test_utils.system import EmulatorCreds

from stripe_ledger.emulator import Emulator
from tests.auth_emulator import auth_app, auth_emulator

# The Auth emulator's fixtures, for every test module (see tests/auth_emulator.py).
__all__ = ["auth_app", "auth_emulator"]

_prefixer = Prefixer("stripe-ledger", "tests", separator="-")


_FIGURE = "figure"


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Keep a figure line of the reliability suite (docs/reliability.md quotes them) on the
    test's report: the session's summary prints it, also when tests run in parallel workers."""

    def emit(line: str) -> None:
        request.node.user_properties.append((_FIGURE, f"[reliability] {line}"))

    return emit


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figure lines tests kept (`report`), in a section of their own."""
    lines = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == _FIGURE
    ]
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.line(line)


@pytest.fixture(scope="session")
def emulator_host() -> Iterator[str]:
    """`host:port` of a running emulator: the one in FIRESTORE_EMULATOR_HOST, or our own."""
    existing = os.environ.get("FIRESTORE_EMULATOR_HOST")
    if existing:
        yield existing
        return
    emulator = Emulator()
    emulator.start()  # raises EmulatorError (an error, never a skip) if it cannot start
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
    try:
        yield emulator.host
    finally:
        os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
        emulator.stop()


@pytest.fixture
def project(emulator_host: str) -> str:
    """A project ID no other test uses, so tests never see each other's documents."""
    return _prefixer.create_prefix()


@pytest.fixture
def db(project: str) -> firestore.Client:
    """A Firestore client on the emulator, in this test's own project."""
    return firestore.Client(project=project, credentials=EmulatorCreds())
