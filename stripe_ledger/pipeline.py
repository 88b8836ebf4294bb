"""The one pipeline every event goes through, whichever door it came in by.

The webhook (snapshot events and thin event notifications), `stripe-ledger replay` and
`stripe-ledger reconcile` all call `process_event` with a verified or trusted event; none
calls a layer below it. In order, it:

1. decides whether any handler applies (for a thin event, to the snapshot type it stands for),
2. claims the event's record (`EventLedger.claim`): a duplicate or an event in flight ends here,
3. prepares what the handlers see, after the claim and outside any transaction: a thin
   event's change is read from Stripe's API (`thin.fetch`), and in refetch mode an object's
   current state (`StripeFetcher.refetched`),
4. for a thin event with a snapshot twin, claims the twin's record as well, so the change
   applies once whichever of the two arrives first,
5. runs the unit of work (`processing.process_claimed`): the handlers and every claim's
   completion in one transaction, or the failure recorded on every claim. When a projection
   finds two different states of its object within one second (`SettleFromApi`: the events
   alone cannot order them), the object is read from Stripe's API with the same fetcher,
   outside the transaction, and the unit of work runs again carrying the state read, which
   wins; without a key the projection keeps its deterministic rule and logs a WARNING.

Whatever stops it after the claim releases the claim: Stripe or Firestore unavailable gives
the attempt back (never counted), anything else is recorded as the attempt's failure. So an
outage never brings an event closer to the dead letter, and no door can skip a step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import TYPE_CHECKING

from google.cloud import firestore

from stripe_ledger import thin
from stripe_ledger.context import SettleFromApi
from stripe_ledger.errors import ConfigurationError, LedgerUnavailable, StripeUnavailable
from stripe_ledger.fetch import StripeFetcher, refetches, unreadable
from stripe_ledger.firestore_client import Snapshot
from stripe_ledger.ledger import RETRYABLE, Claim, EventLedger, Preempted, Settled
from stripe_ledger.outcomes import Delivery, Outcome
from stripe_ledger.processing import describe, process_claimed
from stripe_ledger.verify import VerifiedEvent, is_thin

if TYPE_CHECKING:
    from stripe_ledger.registry import HandlerRegistry

__all__ = ["process_event"]

_RELEASED = (StripeUnavailable, ConfigurationError, LedgerUnavailable)
"""Errors after the claim that say nothing about the event: the attempt is given back."""

_SETTLING_READS = 3
"""API reads one delivery may make to settle same-second conflicts (each one only when the
stored state changed again meanwhile); past them, the deterministic rule decides."""


def process_event(
    received: VerifiedEvent,
    *,
    db: firestore.Client,
    ledger: EventLedger,
    registry: HandlerRegistry,
    fetcher: StripeFetcher | None = None,
    reclaim: Collection[str] = RETRYABLE,
    note: str | None = None,
) -> Delivery:
    """Process `received` exactly once (see the module); return how the delivery ended.

    `fetcher` reads Stripe's API (thin events, refetch mode); without one, a thin event is
    refused with `ConfigurationError`. `reclaim` and `note` are passed to
    `EventLedger.claim`: replays reclaim `failed` and `dead` records (with --force settled
    ones too) and say so in `last_note`; live deliveries and reconcile keep the defaults.
    Raises `LedgerUnavailable` (Firestore), `StripeUnavailable` (Stripe's API) or
    `ConfigurationError`; the claim, if one was made, is released first.
    """

    def attempt(deferred: bool, known: Snapshot | None = None) -> Delivery:
        return _process(
            received,
            db=db,
            ledger=ledger,
            registry=registry,
            fetcher=fetcher,
            reclaim=reclaim,
            note=note,
            deferred=deferred,
            known=known,
        )

    # A snapshot event's first delivery whose handlers only edit documents is claimed by its
    # unit of work's own commit (one write less). A thin event is claimed first, since it
    # calls Stripe's API before its handlers run, and so is one whose handlers read through
    # the transaction: concurrent duplicates would otherwise wait on each other's locks.
    locks = any(r.reads is not None for r in registry.applicable(received))
    try:
        return attempt(deferred=not (is_thin(received.data) or locks))
    except Preempted as preempted:  # another delivery created the record: judged from it
        return attempt(deferred=False, known=preempted.snapshot)


def _process(
    received: VerifiedEvent,
    *,
    db: firestore.Client,
    ledger: EventLedger,
    registry: HandlerRegistry,
    fetcher: StripeFetcher | None,
    reclaim: Collection[str],
    note: str | None,
    deferred: bool,
    known: Snapshot | None = None,
) -> Delivery:
    event_type = thin.applied_type(received, registry) if is_thin(received.data) else None
    arriving = thin.stub(received, event_type) if event_type else received
    handled = bool(registry.applicable(arriving))
    claim = ledger.claim(
        received,
        handled=handled,
        reclaim=reclaim,
        note=note,
        deferred=deferred,
        known=known,
    )
    if isinstance(claim, Settled):
        return _settled(received, claim)
    try:
        applied, twin, unapplied = _prepare(received, ledger, fetcher, event_type)
        if applied is None:
            outcome = ledger.complete_without_handlers(claim, unapplied or "not applied")
            return Delivery(outcome, received.id, received.type, attempt=claim.attempt)
        claims = [claim]
        if twin is not None:
            twin_note = f"applied from thin event {received.id}"
            twin_claim = ledger.claim(applied, handled=True, reclaim=reclaim, note=twin_note)
            if isinstance(twin_claim, Settled):
                return _twin_settled(received, claim, twin, twin_claim, ledger)
            claims.insert(0, twin_claim)
    except _RELEASED as error:
        ledger.record_failure(claim, describe(error), counts=False)
        raise
    except Exception as error:  # noqa: BLE001 - a fault in preparing the event: its attempt
        outcome = ledger.record_failure(claim, describe(error))
        return Delivery(
            outcome,
            received.id,
            received.type,
            attempt=claim.attempt,
            error=describe(error),
            exception=error,
        )
    if fetcher is not None and fetcher.can_read(applied):
        applied = dataclasses.replace(applied, settleable=True)
    delivery = _unit_of_work(applied, claims, db, ledger, registry, fetcher)
    return dataclasses.replace(
        delivery, event_id=received.id, event_type=received.type, attempt=claim.attempt
    )


def _prepare(
    received: VerifiedEvent,
    ledger: EventLedger,
    fetcher: StripeFetcher | None,
    event_type: str | None,
) -> tuple[VerifiedEvent | None, str | None, str | None]:
    """The event as its handlers see it (None if nothing can be applied, and why), and its
    snapshot twin's ID if it is a thin event."""
    if is_thin(received.data):
        fetched = thin.fetch(received, fetcher, event_type)
        return fetched.applied, fetched.twin, fetched.note
    if fetcher is not None and refetches(ledger.settings, received):
        return fetcher.refetched(received), None, None
    return received, None, None


def _unit_of_work(
    applied: VerifiedEvent,
    claims: list[Claim],
    db: firestore.Client,
    ledger: EventLedger,
    registry: HandlerRegistry,
    fetcher: StripeFetcher | None,
) -> Delivery:
    """`process_claimed`, settling each same-second conflict it meets from Stripe's API."""
    reads = 0
    deadline = fetcher.deadline() if fetcher is not None else 0.0  # shared by every read
    while True:
        try:
            return process_claimed(applied, claims, db=db, ledger=ledger, registry=registry)
        except SettleFromApi as conflict:
            reads += 1
            try:
                applied = _settling(
                    applied, conflict, fetcher, deadline, last=reads > _SETTLING_READS
                )
            except _RELEASED as error:
                for claim in claims:
                    ledger.record_failure(claim, describe(error), counts=False)
                raise


def _settling(
    applied: VerifiedEvent,
    conflict: SettleFromApi,
    fetcher: StripeFetcher | None,
    deadline: float,
    *,
    last: bool,
) -> VerifiedEvent:
    """`applied` carrying its object's state read now, which replaces the conflicting stored
    one; or, when it cannot be read (no more reads, a 404), not settleable: the next run
    applies the deterministic rule (and cannot ask again)."""
    if fetcher is None or last:
        return dataclasses.replace(applied, settleable=False)
    observed_at = fetcher.clock()
    current = fetcher.read_object(
        conflict.object_type, conflict.object_id, deadline=deadline, account=applied.account
    )
    if current is None:
        unreadable(applied, "Stripe's API answered 404 to this key")
        return dataclasses.replace(applied, settleable=False)
    read = applied.with_object(current, observed_at)
    return dataclasses.replace(read, settles=conflict.stored_event_id)


def _settled(received: VerifiedEvent, settled: Settled) -> Delivery:
    return Delivery(
        settled.outcome,
        received.id,
        received.type,
        attempt=settled.attempt,
        error=settled.error,
        retry_after=settled.retry_after,
    )


def _twin_settled(
    received: VerifiedEvent, claim: Claim, twin_id: str, twin: Settled, ledger: EventLedger
) -> Delivery:
    """A thin event whose snapshot twin is in flight (retry later: the claim is released) or
    settled (its change was applied, or dead-lettered, under the twin: nothing runs)."""
    if twin.outcome is Outcome.IN_FLIGHT:
        ledger.record_failure(claim, f"its snapshot twin {twin_id} is in flight", counts=False)
        return Delivery(
            Outcome.IN_FLIGHT,
            received.id,
            received.type,
            attempt=claim.attempt,
            retry_after=twin.retry_after,
        )
    note = f"not applied again: its snapshot twin {twin_id} is {twin.status}"
    outcome = ledger.complete_without_handlers(claim, note)
    settled = Outcome.DUPLICATE if outcome is Outcome.COMPLETED else outcome
    return Delivery(settled, received.id, received.type, attempt=claim.attempt)
