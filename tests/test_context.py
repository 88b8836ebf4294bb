"""Reads through the handler context: batched, cached, allowed after other handlers' writes,
refused for a document already written in the transaction."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.cloud import firestore

from stripe_ledger.config import Settings
from stripe_ledger.context import HandlerContext, ReadAfterWrite
from stripe_ledger.ledger import EventLedger
from stripe_ledger.outcomes import Outcome
from stripe_ledger.pipeline import process_event
from stripe_ledger.registry import HandlerRegistry
from stripe_ledger.verify import parse_event
from tests.support import SECRET, count_rpcs, make_event

pytestmark = pytest.mark.emulator


def run(db: firestore.Client, registry: HandlerRegistry) -> tuple[Outcome, str | None]:
    received = parse_event(json.dumps(make_event("test.read")))
    delivery = process_event(
        received,
        db=db,
        ledger=EventLedger(db, Settings(webhook_secrets=(SECRET,))),
        registry=registry,
    )
    return delivery.outcome, delivery.error


def test_a_handler_reads_after_an_earlier_handler_wrote(db: firestore.Client) -> None:
    """The client alone refuses any read once a write is buffered; through the context, a
    later handler still reads a document nobody wrote, inside the same transaction."""
    db.collection("settings").document("plan").set({"limit": 3})
    seen: list[Any] = []
    registry = HandlerRegistry()

    @registry.on("test.read")
    def first(ctx: HandlerContext) -> None:
        ctx.tx.set(ctx.db.collection("audit").document(ctx.event_id), {"seen": True})

    @registry.on("test.read")
    def second(ctx: HandlerContext) -> None:
        seen.append(ctx.get(ctx.db.collection("settings").document("plan")).get("limit"))

    assert run(db, registry) == (Outcome.COMPLETED, None)
    assert seen == [3]


def test_reading_a_document_written_in_the_transaction_fails_the_event(
    db: firestore.Client,
) -> None:
    """A read of a document an earlier handler wrote would see its old state: refused, and the
    event fails (nothing applied)."""
    registry = HandlerRegistry()

    @registry.on("test.read")
    def first(ctx: HandlerContext) -> None:
        ctx.tx.set(ctx.db.collection("shared").document("doc"), {"n": 1})

    @registry.on("test.read")
    def second(ctx: HandlerContext) -> None:
        ctx.get(ctx.db.collection("shared").document("doc"))

    outcome, error = run(db, registry)
    assert outcome is Outcome.FAILED
    assert error is not None
    assert error.startswith(ReadAfterWrite.__name__)
    assert not db.collection("shared").document("doc").get().exists


def test_declared_reads_are_one_batch_and_served_from_it(db: firestore.Client) -> None:
    """Documents declared with reads= are fetched in one BatchGetDocuments, before any handler
    runs; `ctx.get` on them costs no further call."""
    registry = HandlerRegistry()

    def refs(ctx: HandlerContext) -> list[firestore.DocumentReference]:
        return [ctx.db.collection("a").document("1"), ctx.db.collection("b").document("2")]

    @registry.on("test.read", reads=refs)
    def read_both(ctx: HandlerContext) -> None:
        for ref in refs(ctx):
            ctx.get(ref)
        ctx.tx.set(ctx.db.collection("a").document("1"), {"done": True})

    counter = count_rpcs(db)
    assert run(db, registry) == (Outcome.COMPLETED, None)
    assert counter.calls["BatchGetDocuments"] == 1
