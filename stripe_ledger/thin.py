"""Thin events (Stripe's event notifications): what they refer to, read from Stripe's API.

A thin event carries its ID, type and a reference to the object it is about, not the object.
The pipeline records it in the ledger under its own ID; after the claim, outside any
transaction, `fetch` reads the full event (for its `snapshot_event`) and the related object,
and gives the snapshot-shaped event the handlers of the matching snapshot type run on
(`v1.customer.updated` runs what `customer.updated` runs).

A thin event and its snapshot twin describe one change, and must apply it once. When the full
event names a `snapshot_event`, the pipeline applies the change under a claim on the twin's
own record, `stripe_events/{snapshot_event}`, in a transaction that completes both records;
whichever of the two arrives first applies it, and the other finds the twin's record settled
or in flight and runs nothing.

A related object that answers 404 is deleted only if the event's type says so (`*.deleted`):
otherwise the key cannot see it (another mode or account, a restricted key) and nothing is
applied (the record is completed with a note, and a WARNING is logged), since a thin event
has no snapshot to fall back on. Nor is a thin event of the other mode than the key's read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stripe_ledger.errors import ConfigurationError, StripeUnavailable
from stripe_ledger.fetch import StripeFetcher, unreadable
from stripe_ledger.verify import VerifiedEvent

if TYPE_CHECKING:
    from stripe_ledger.registry import HandlerRegistry

__all__ = ["Fetched", "applied_type", "fetch", "snapshot_type", "stub"]


@dataclass(frozen=True)
class Fetched:
    """A thin event's change as its handlers see it, and its snapshot twin's ID, if any."""

    applied: VerifiedEvent | None
    """None when nothing can be applied: the key cannot read the related object."""
    twin: str | None
    note: str | None = None
    """Why nothing was applied."""


def snapshot_type(thin_type: str) -> str:
    """The snapshot event type whose handlers a thin event runs (`v1.` dropped)."""
    return thin_type.removeprefix("v1.")


def applied_type(thin: VerifiedEvent, registry: HandlerRegistry) -> str:
    """The snapshot type whose handlers `thin` runs: its own without `v1.`, or, when no
    handler takes that type (a thin-only type such as `v1.customer.subscription.past_due`,
    or `v1.invoice.line_item_added`), the type registered for its related object's family
    (`HandlerRegistry.family`), so that the object is fetched and projected all the same."""
    own = snapshot_type(thin.type)
    if registry.handlers_for(own):
        return own
    return registry.family_type(str(thin.object.get("object"))) or own


def stub(thin: VerifiedEvent, event_type: str | None = None) -> VerifiedEvent:
    """The thin event shaped as a snapshot of its reference only: what decides, before the
    claim, whether any handler applies to it."""
    return VerifiedEvent(_applied(thin, thin.id, thin.object, event_type), thin.payload)


def fetch(
    thin: VerifiedEvent, fetcher: StripeFetcher | None, event_type: str | None = None
) -> Fetched:
    """Read the thin event and its related object from Stripe's API (see the module).

    Raises `ConfigurationError` without an API key, `StripeUnavailable` when Stripe cannot
    answer (or does not know the event yet).
    """
    if fetcher is None:
        raise ConfigurationError("thin events need STRIPE_API_KEY to fetch what they refer to")
    if not fetcher.can_read(thin):
        why = "the event's mode differs from STRIPE_API_KEY's"
        unreadable(stub(thin), why)
        return Fetched(None, None, f"not applied: {why}")
    deadline = fetcher.deadline()
    event = fetcher.get(f"/v2/core/events/{thin.id}", deadline=deadline, context=thin.account)
    if event is None:
        raise StripeUnavailable(f"Stripe does not know thin event {thin.id} (yet)")
    twin = event.get("snapshot_event")
    twin = twin if isinstance(twin, str) else None
    related = thin.data.get("related_object") or {}
    observed_at = fetcher.clock()
    obj: dict[str, Any] = {}
    if related:
        found = fetcher.get(related["url"], deadline=deadline, context=thin.account)
        if found is None and not snapshot_type(thin.type).endswith(".deleted"):
            why = "Stripe's API answered 404 to this key"
            unreadable(stub(thin), why)
            return Fetched(None, twin, f"not applied: {why}")
        obj = found or {"id": related.get("id"), "object": related.get("type"), "deleted": True}
    data = _applied(thin, twin or thin.id, obj, event_type)
    return Fetched(VerifiedEvent(data, json.dumps(data), observed_at=observed_at), twin)


def _applied(
    thin: VerifiedEvent, event_id: str, obj: dict[str, Any], event_type: str | None
) -> dict[str, Any]:
    """The snapshot-shaped event the handlers see (and a twin's record keeps as payload)."""
    return {
        "id": event_id,
        "object": "event",
        "type": event_type or snapshot_type(thin.type),
        "created": thin.created,
        "livemode": thin.livemode,
        "account": thin.account,
        "api_version": None,
        "data": {"object": obj},
    }
