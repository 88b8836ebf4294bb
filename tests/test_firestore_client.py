"""The function's Firestore client gives up on an unreachable Firestore within its bound."""

from __future__ import annotations

import json
import time

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from stripe_ledger.config import Settings
from stripe_ledger.errors import LedgerUnavailable
from stripe_ledger.firestore_client import bound_rpc_time
from stripe_ledger.ledger import EventLedger
from stripe_ledger.pipeline import process_event
from stripe_ledger.registry import HandlerRegistry
from stripe_ledger.verify import parse_event
from tests.support import SECRET, make_event


def test_unreachable_firestore_is_unavailable_within_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With nothing listening, a delivery raises LedgerUnavailable (503) after about the
    configured bound, instead of the client's default minute of retries."""
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    client = firestore.Client(
        project="unreachable",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint="127.0.0.1:9"),
    )
    bound_rpc_time(client, 2)
    settings = Settings(webhook_secrets=(SECRET,))
    received = parse_event(json.dumps(make_event("nobody.listens")))
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable):
        process_event(
            received, db=client, ledger=EventLedger(client, settings), registry=HandlerRegistry()
        )
    assert time.monotonic() - started < 10
