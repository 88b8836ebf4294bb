"""Thin events (Stripe's event notifications): recorded, fetched, and applied like snapshots.

A thin event carries its ID, type and a reference to the object it is about, not the object.
It is recorded in the same ledger under its own ID. After the claim, outside the transaction,
the full event (for its `snapshot_event`) and the related object are read from Stripe's API;
then the handlers of the matching snapshot type (`v1.customer.updated` runs what
`customer.updated` runs) run on the fetched object, in one transaction.

A thin event and its snapshot twin describe one change, and must apply it once. When the full
event names a `snapshot_event`, the thin event's handlers run under a claim on the twin's own
record, `stripe_events/{snapshot_event}`: whichever of the two arrives first applies the
change, in a transaction that completes both records, and the other finds the twin's record
settled or in flight and runs nothing.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from google.cloud import firestore

from stripe_ledger.errors import ConfigurationError, InvalidEvent, StripeUnavailable
from stripe_ledger.fetch import StripeFetcher
from stripe_ledger.ledger import Claim, EventLedger, Settled
from stripe_ledger.outcomes import Delivery, Outcome
from stripe_ledger.processing import process_claimed
from stripe_ledger.registry import HandlerRegistry
from stripe_ledger.verify import VerifiedEvent, check_event_id

__all__ = ["THIN_OBJECT", "is_thin", "process_thin", "snapshot_type", "thin_event_from"]

THIN_OBJECT = "v2.core.event"


def is_thin(data: dict[str, Any]) -> bool:
    """Whether a verified body is a thin event notification rather than a snapshot event."""
    return data.get("object") == THIN_OBJECT


def snapshot_type(thin_type: str) -> str:
    """The snapshot event type whose handlers a thin event runs (`v1.` dropped)."""
    return thin_type.removeprefix("v1.")


def thin_event_from(data: dict[str, Any], payload: str) -> VerifiedEvent:
    """The thin event as the ledger records it: its own ID and type, its related object's ID
    as `object_id`, the body as received. Raises `InvalidEvent` for a malformed notification."""
    check_event_id(data)
    try:
        created = int(
            datetime.fromisoformat(str(data["created"]).replace("Z", "+00:00")).timestamp()
        )
    except (KeyError, ValueError, OverflowError):
        raise InvalidEvent("thin event has no valid created time") from None
    related = data.get("related_object")
    if related is not None and not (
        isinstance(related, dict) and isinstance(related.get("url"), str)
    ):
        raise InvalidEvent("thin event has a malformed related_object")
    stub = {"id": related.get("id"), "object": related.get("type")} if related else {}
    context = data.get("context")
    record = {
        "id": data["id"],
        "object": THIN_OBJECT,
        "type": data["type"],
        "created": created,
        "livemode": bool(data.get("livemode")),
        "account": context if isinstance(context, str) else None,
        "data": {"object": stub},
        "related_object": related,
    }
    return VerifiedEvent(data=record, payload=payload)


def _applied(thin: VerifiedEvent, event_id: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The snapshot-shaped event the handlers see (and a twin's record keeps as payload)."""
    return {
        "id": event_id,
        "object": "event",
        "type": snapshot_type(thin.type),
        "created": thin.created,
        "livemode": thin.livemode,
        "account": thin.account,
        "api_version": None,
        "data": {"object": obj},
    }


def process_thin(
    thin: VerifiedEvent,
    *,
    fetcher: StripeFetcher | None,
    db: firestore.Client,
    ledger: EventLedger,
    registry: HandlerRegistry,
) -> Delivery:
    """Claim the thin event, fetch what it refers to, and apply it (see the module)."""
    stub = VerifiedEvent(_applied(thin, thin.id, thin.object), thin.payload)
    claim = ledger.claim(thin, handled=bool(registry.applicable(stub)))
    if isinstance(claim, Settled):
        return _delivery(thin, claim.outcome, claim.attempt, claim.error, claim.retry_after)
    try:
        twin, obj, observed_at = _fetch(thin, fetcher)
    except (StripeUnavailable, ConfigurationError) as error:
        ledger.record_failure(claim, f"{type(error).__name__}: {error}", counts=False)
        raise
    data = _applied(thin, twin or thin.id, obj)
    applied = VerifiedEvent(data, json.dumps(data), observed_at=observed_at)
    if twin is None:
        delivery = process_claimed(applied, claim, db=db, ledger=ledger, registry=registry)
        return _delivery(thin, delivery.outcome, delivery.attempt, delivery.error)
    return _apply_with_twin(thin, claim, applied, db=db, ledger=ledger, registry=registry)


def _fetch(
    thin: VerifiedEvent, fetcher: StripeFetcher | None
) -> tuple[str | None, dict[str, Any], float]:
    """The snapshot twin's ID (if any), the related object now, and when it was read."""
    if fetcher is None:
        raise ConfigurationError("thin events need STRIPE_API_KEY to fetch what they refer to")
    deadline = fetcher.deadline()
    event = fetcher.get(f"/v2/core/events/{thin.id}", deadline=deadline, context=thin.account)
    if event is None:
        raise StripeUnavailable(f"Stripe does not know thin event {thin.id} (yet)")
    twin = event.get("snapshot_event")
    related = thin.data.get("related_object") or {}
    observed_at = fetcher.clock()
    obj: dict[str, Any] = {}
    if related:
        found = fetcher.get(related["url"], deadline=deadline, context=thin.account)
        obj = found or {"id": related.get("id"), "object": related.get("type"), "deleted": True}
    return (twin if isinstance(twin, str) else None), obj, observed_at


def _apply_with_twin(
    thin: VerifiedEvent,
    claim: Claim,
    applied: VerifiedEvent,
    *,
    db: firestore.Client,
    ledger: EventLedger,
    registry: HandlerRegistry,
) -> Delivery:
    twin_claim = ledger.claim(applied, handled=True, note=f"applied from thin event {thin.id}")
    if isinstance(twin_claim, Settled):
        if twin_claim.outcome is Outcome.IN_FLIGHT:
            ledger.record_failure(
                claim, f"its snapshot twin {applied.id} is in flight", counts=False
            )
            return _delivery(thin, Outcome.IN_FLIGHT, claim.attempt, None, twin_claim.retry_after)
        note = f"not applied again: its snapshot twin {applied.id} is {twin_claim.status}"
        outcome = ledger.complete_without_handlers(claim, note)
        settled = Outcome.DUPLICATE if outcome is Outcome.COMPLETED else outcome
        return _delivery(thin, settled, claim.attempt, None)
    delivery = process_claimed(
        applied, twin_claim, db=db, ledger=ledger, registry=registry, also_complete=(claim,)
    )
    if delivery.outcome is not Outcome.COMPLETED:
        ledger.record_failure(
            claim,
            f"its snapshot twin {applied.id}: {delivery.error or delivery.outcome.value}",
            counts=False,
        )
    return _delivery(thin, delivery.outcome, claim.attempt, delivery.error)


def _delivery(
    thin: VerifiedEvent,
    outcome: Outcome,
    attempt: int | None,
    error: str | None,
    retry_after: int | None = None,
) -> Delivery:
    return Delivery(
        outcome, thin.id, thin.type, attempt=attempt, error=error, retry_after=retry_after
    )
