"""The test harness: the Firestore emulator for the session, and a fresh project per test.

When FIRESTORE_EMULATOR_HOST is unset, the official emulator is started here (and stopped at
the end); if it cannot start, every test that needs it errors loudly instead of skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from google.cloud import firestore
from test_utils.prefixer import Prefixer
from test_utils.system import EmulatorCreds

from stripe_ledger.emulator import Emulator
from tests.auth_emulator import auth_app, auth_emulator

# The Auth emulator's fixtures, for every test module (see tests/auth_emulator.py).
__all__ = ["auth_app", "auth_emulator"]

_prefixer = Prefixer("stripe-ledger", "tests", separator="-")


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
