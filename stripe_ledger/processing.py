"""Process one verified event exactly once: claim it, run its handlers, commit, or record why not.

The handlers' writes and the record's `completed` status commit in one Firestore
transaction, so an event's effects are applied entirely or not at all, and once: a duplicate
finds the claim or the settled record and runs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

import google.auth.exceptions
from google.api_core import exceptions as gexc
from google.cloud import firestore

from stripe_ledger.context import HandlerContext
from stripe_ledger.errors import ConfigurationError, LedgerUnavailable, StripeUnavailable
from stripe_ledger.ledger import RETRYABLE, Claim, EventLedger, Settled
from stripe_ledger.outbox import Outbox, run_enqueued
from stripe_ledger.outcomes import Delivery, Outcome

if TYPE_CHECKING:
    from stripe_ledger.registry import HandlerRegistry, Registration
    from stripe_ledger.verify import VerifiedEvent

__all__ = ["HandlerFailed", "Prepare", "process_claimed", "process_event"]

Prepare = Callable[["VerifiedEvent"], "VerifiedEvent"]
"""Turns the claimed event into the one its handlers see, outside the transaction."""

_TRANSACTION_ATTEMPTS = 3

# Errors that say nothing about the event: Firestore (or the credentials to reach it) is not
# available right now. They release the claim without counting towards dead-lettering.
_UNAVAILABLE = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.ResourceExhausted,
    gexc.Aborted,
    gexc.Unknown,
    gexc.Cancelled,
    gexc.PermissionDenied,
    gexc.Unauthenticated,
    gexc.RetryError,
    google.auth.exceptions.TransportError,
    google.auth.exceptions.RefreshError,
)


class HandlerFailed(Exception):
    """A handler raised; the original exception is `__cause__`."""

    def __init__(self, handler: str) -> None:
        super().__init__(handler)
        self.handler = handler


def process_event(
    received: VerifiedEvent,
    *,
    db: firestore.Client,
    ledger: EventLedger,
    registry: HandlerRegistry,
    reclaim: Collection[str] = RETRYABLE,
    note: str | None = None,
    prepare: Prepare | None = None,
) -> Delivery:
    """Claim `received` and run its handlers in one transaction with its ledger record.

    Returns the `Delivery`; raises `LedgerUnavailable` when Firestore cannot be reached or
    contention was not resolved (nothing is applied then, and the claim is released if
    Firestore lets us). `reclaim` and `note` are passed to `EventLedger.claim` (replays use
    them); live deliveries keep the defaults. `prepare` is passed to `process_claimed`.
    """
    # Decided before the claim: an event no handler applies to is recorded `ignored`.
    registrations = registry.applicable(received)
    try:
        claim = ledger.claim(received, handled=bool(registrations), reclaim=reclaim, note=note)
    except _UNAVAILABLE as error:
        raise LedgerUnavailable(f"Firestore unavailable: {type(error).__name__}") from error
    if isinstance(claim, Settled):
        return Delivery(
            claim.outcome,
            received.id,
            received.type,
            attempt=claim.attempt,
            error=claim.error,
            retry_after=claim.retry_after,
        )
    return process_claimed(
        received, claim, db=db, ledger=ledger, registry=registry, prepare=prepare
    )


def process_claimed(
    received: VerifiedEvent,
    claim: Claim,
    *,
    db: firestore.Client,
    ledger: EventLedger,
    registry: HandlerRegistry,
    prepare: Prepare | None = None,
    also_complete: Sequence[Claim] = (),
) -> Delivery:
    """Run the handlers of an event this delivery has claimed, in one transaction with the
    record's completion; on failure, record it (see `process_event`).

    `prepare`, if given, runs first, after the claim and outside the transaction (it reads
    Stripe's API: refetch mode); if it raises `StripeUnavailable`, the attempt is released
    without counting and the error propagates (503). `also_complete` are other claims the
    same transaction completes (a thin event applied under its snapshot twin's claim).
    """
    if prepare is not None:
        try:
            received = prepare(received)
        except (StripeUnavailable, ConfigurationError) as error:
            ledger.record_failure(claim, f"{type(error).__name__}: {error}", counts=False)
            raise
    registrations = registry.applicable(received)
    outbox = Outbox(db, ledger.settings, registry, ledger.clock)
    try:
        committed = _run_transaction(  # pragma: SYNCPOINT ledger
            received, (claim, *also_complete), db, ledger, registrations, outbox
        )
    except Exception as error:  # noqa: BLE001 - every failure is classified below
        return _after_failure(received, claim, ledger, error)
    run_enqueued(committed)  # the tasks it enqueued, at least once; never raises
    return Delivery(Outcome.COMPLETED, received.id, received.type, attempt=claim.attempt)


def _run_transaction(
    received: VerifiedEvent,
    claims: tuple[Claim, ...],
    db: firestore.Client,
    ledger: EventLedger,
    registrations: tuple[Registration, ...],
    outbox: Outbox,
) -> HandlerContext:
    def apply(tx: firestore.Transaction) -> HandlerContext:
        tasks = outbox.batch(received, tx)
        ctx = HandlerContext(received, tx, db, claims[0].attempt, tasks)
        declared: list[firestore.DocumentReference] = []
        for registration in registrations:
            if registration.reads is not None:
                try:
                    declared.extend(registration.reads(ctx))
                except Exception as error:
                    raise HandlerFailed(registration.name) from error
        if declared:
            ctx.get_all(declared)  # every declared read in one batch, before any write
        for registration in registrations:
            try:
                registration.handler(ctx)
            except Exception as error:
                raise HandlerFailed(registration.name) from error
        tasks.write()  # the tasks the handlers enqueued, created in this transaction
        for claim in claims:
            ledger.complete(tx, claim)  # pragma: SYNCPOINT ledger
        return ctx

    committed: HandlerContext = firestore.transactional(apply)(
        db.transaction(max_attempts=_TRANSACTION_ATTEMPTS)
    )
    return committed


def _after_failure(
    received: VerifiedEvent, claim: Claim, ledger: EventLedger, error: Exception
) -> Delivery:
    """Classify why the transaction did not commit, and record it where that is safe.

    The failed transaction was rolled back, so its writes (the handlers' and the record's
    `completed`) are gone; the failure is recorded by a separate, small write conditional on
    the claim.
    """
    cause = error.__cause__ if isinstance(error, HandlerFailed) else error
    unavailable = isinstance(cause, _UNAVAILABLE) or (
        # The client gives up on contention with a ValueError chained to the last Aborted.
        isinstance(error, ValueError) and isinstance(error.__cause__, gexc.Aborted)
    )
    try:
        if isinstance(error, gexc.FailedPrecondition) and not ledger.holds(claim):
            # Our lease expired and another delivery took the event over; its result stands.
            return Delivery(Outcome.IN_FLIGHT, received.id, received.type, retry_after=1)
        description = _describe(error)
        outcome = ledger.record_failure(claim, description, counts=not unavailable)
    except _UNAVAILABLE as record_error:
        raise LedgerUnavailable(f"Firestore unavailable: {type(record_error).__name__}") from error
    if unavailable:
        raise LedgerUnavailable(f"Firestore unavailable: {type(cause).__name__}") from error
    return Delivery(outcome, received.id, received.type, attempt=claim.attempt, error=description)


def _describe(error: BaseException) -> str:
    """`last_error`: the exception's type and message (the handler's, when one raised)."""
    if isinstance(error, HandlerFailed) and error.__cause__ is not None:
        cause = error.__cause__
        return f"{type(cause).__name__}: {cause} (in {error.handler})"
    return f"{type(error).__name__}: {error}"
