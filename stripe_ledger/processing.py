"""The unit of work of one claimed event: its handlers and its record's completion, in one
Firestore transaction, or the record of why not.

The handlers' writes, the tasks they enqueue and the `completed` status of every claim the
event is applied under commit together, so an event's effects are applied entirely or not at
all, and once. Only `stripe_ledger.pipeline` calls this, after it claimed the event.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from google.cloud import firestore

from stripe_ledger.context import (
    HandlerContext,
    SettleFromApi,
    is_edit_conflict,
    read_declared,
    settling_conflicts,
)
from stripe_ledger.errors import LedgerUnavailable
from stripe_ledger.firestore_client import is_unavailable, run_transaction, translated
from stripe_ledger.ledger import Claim, EventLedger, Preempted
from stripe_ledger.outbox import Outbox, TaskBatch, run_enqueued
from stripe_ledger.outcomes import Delivery, Outcome

if TYPE_CHECKING:
    from stripe_ledger.registry import HandlerRegistry, Registration
    from stripe_ledger.verify import VerifiedEvent

__all__ = ["HandlerFailed", "describe", "failed_handler", "process_claimed", "run_enqueued"]

_TRANSACTION_ATTEMPTS = 3
_MAX_MESSAGE_CHARS = 700
_IN_HANDLER = re.compile(r" \(in ([\w.<>]+)\)$")


class HandlerFailed(Exception):
    """A handler raised; the original exception is `__cause__`."""

    def __init__(self, handler: str) -> None:
        super().__init__(handler)
        self.handler = handler


def process_claimed(
    received: VerifiedEvent,
    claims: Sequence[Claim],
    *,
    db: firestore.Client,
    ledger: EventLedger,
    registry: HandlerRegistry,
) -> Delivery:
    """Run the handlers of `received` in one transaction that also completes every claim in
    `claims` (the first is the one whose attempt counts; a thin event applied under its
    snapshot twin's claim adds its own).

    On failure, the failure is recorded on every claim, each released: counted on the first
    when a handler raised, never when Firestore was unavailable, which raises
    `LedgerUnavailable` after the claims are released. A handler's `SettleFromApi` is
    raised as is, the claims still held, for the pipeline to settle; so is `Preempted`, when
    a deferred claim's record turns out to be another delivery's.
    """
    registrations = registry.applicable(received)
    outbox = Outbox(db, ledger.settings, registry, ledger.clock)

    def conflicted(error: Exception) -> bool:
        # A lost claim fails a precondition too: only a held claim's failure is a conflict.
        return is_edit_conflict(error) and all(ledger.holds(claim) for claim in claims)

    def unit_of_work() -> TaskBatch:
        return _run_transaction(  # pragma: SYNCPOINT ledger
            received, tuple(claims), db, ledger, registrations, outbox
        )

    try:
        enqueued = settling_conflicts(
            unit_of_work,
            budget_seconds=ledger.settings.firestore_timeout_seconds,
            conflicted=conflicted,
        )
    except Preempted:
        raise
    except HandlerFailed as error:
        if isinstance(error.__cause__, SettleFromApi):
            raise error.__cause__ from None  # rolled back, claims held: the pipeline reads
        return _after_failure(received, claims, ledger, error)
    except Exception as error:  # noqa: BLE001 - every failure is classified below
        return _after_failure(received, claims, ledger, error)
    run_enqueued(outbox, enqueued)  # at least once, after the commit; never raises
    return Delivery(Outcome.COMPLETED, received.id, received.type, attempt=claims[0].attempt)


def _run_transaction(
    received: VerifiedEvent,
    claims: tuple[Claim, ...],
    db: firestore.Client,
    ledger: EventLedger,
    registrations: tuple[Registration, ...],
    outbox: Outbox,
) -> TaskBatch:
    """The transaction; returns the batch of tasks it created."""

    def apply(tx: firestore.Transaction) -> TaskBatch:
        tasks = outbox.batch(received, tx)
        ctx = HandlerContext(
            received,
            tx,
            db,
            claims[0].attempt,
            tasks,
            settings=ledger.settings,
        )

        def named(registration: Registration, kind: str) -> list[firestore.DocumentReference]:
            names = getattr(registration, kind)
            try:
                return list(names(ctx)) if names is not None else []
            except Exception as error:
                raise HandlerFailed(registration.name) from error

        def declared(kind: str) -> list[firestore.DocumentReference]:
            return [ref for r in registrations for ref in named(r, kind)]

        def run(phase: list[Registration]) -> None:
            for registration in phase:
                try:
                    registration.handler(ctx)
                except Exception as error:
                    raise HandlerFailed(registration.name) from error

        read_declared(ctx, lambda: declared("reads"))  # through the transaction, before any write
        # The handlers that edit documents run last, after those are read without a lock: the
        # shorter the time from that read to the commit, the fewer events racing for one
        # document conflict (`Edits`). The others run first, in registration order.
        editing = [r for r in registrations if named(r, "edits")]
        run([r for r in registrations if r not in editing])
        # A deferred claim's record is read along with the documents to edit, for free: a
        # duplicate of a settled event then stops here, before its handlers run.
        along = [ledger.ref(claims[0].event_id)] if claims[0].deferred and editing else []
        read_declared(ctx, lambda: (), lambda: declared("edits") + along)
        if along and (found := ctx.edits.snapshot(along[0])) is not None and found.exists:
            raise Preempted(found)
        run(editing)
        ctx.edits.write(tx)  # the documents handlers changed together, once each
        tasks.write()  # the tasks the handlers enqueued, created in this transaction
        for claim in claims:
            ledger.complete(tx, claim)  # pragma: SYNCPOINT ledger
        return tasks

    with translated("the event's transaction"):
        return run_transaction(db, apply, max_attempts=_TRANSACTION_ATTEMPTS)


def _after_failure(
    received: VerifiedEvent, claims: Sequence[Claim], ledger: EventLedger, error: Exception
) -> Delivery:
    """Classify why the transaction did not commit, and record it where that is safe.

    The failed transaction was rolled back, so its writes (the handlers' and the records'
    `completed`) are gone; the failure is recorded by separate, small writes, each
    conditional on its claim.
    """
    cause = error.__cause__ if isinstance(error, HandlerFailed) else error
    unavailable = cause is not None and is_unavailable(cause)
    first, *others = claims
    in_doubt = unavailable or is_edit_conflict(error)  # unanswered, or a precondition refused
    if first.deferred and in_doubt and ledger.read_back_deferred(first):
        # Its commit landed and only the answer was lost; the tasks it enqueued are left to
        # the outbox's scheduled runner. (Another delivery's record raised `Preempted`.)
        return Delivery(Outcome.COMPLETED, received.id, received.type, attempt=first.attempt)
    description = describe(error)
    if is_edit_conflict(error):  # a precondition failed: maybe one of the claims'
        lost = [claim for claim in claims if not ledger.holds(claim)]
        if lost:
            # A lease expired and another delivery took that event over; its result stands,
            # and the claims still held are given back.
            for claim in claims:
                if claim not in lost:
                    ledger.record_failure(claim, description, counts=False)
            return Delivery(Outcome.IN_FLIGHT, received.id, received.type, retry_after=1)
    if cause is not None and is_edit_conflict(cause):
        # Other events' commits kept changing the documents this one edits (a hot customer):
        # nothing was applied and nothing is wrong with the event. Given back, not counted.
        # Firestore's message names the document (an object's ID): it is not repeated.
        contended = f"{type(cause).__name__}: other events kept changing what it edits"
        for claim in claims:
            ledger.record_failure(claim, contended, counts=False)
        return Delivery(
            Outcome.CONTENDED, received.id, received.type, error=contended, retry_after=1
        )
    outcome = ledger.record_failure(first, description, counts=not unavailable)
    for other in others:
        twin_failed = f"its snapshot twin {first.event_id}: {description}"
        ledger.record_failure(other, twin_failed, counts=False)
    if unavailable:
        raise LedgerUnavailable(f"Firestore unavailable: {type(cause).__name__}") from error
    return Delivery(
        outcome,
        received.id,
        received.type,
        attempt=first.attempt,
        error=description,
        exception=cause if isinstance(error, HandlerFailed) else None,
    )


def describe(error: BaseException) -> str:
    """`last_error`: the exception's type and message, and the handler that raised it."""
    if isinstance(error, HandlerFailed) and error.__cause__ is not None:
        cause = error.__cause__
        message = str(cause)
        if len(message) > _MAX_MESSAGE_CHARS:  # keep the handler's name within `last_error`
            message = message[:_MAX_MESSAGE_CHARS] + "..."
        return f"{type(cause).__name__}: {message} (in {error.handler})"
    return f"{type(error).__name__}: {error}"


def failed_handler(last_error: str | None) -> str | None:
    """The handler named by a `last_error` that `describe` wrote, or None."""
    found = _IN_HANDLER.search(last_error or "")
    return found.group(1) if found else None
