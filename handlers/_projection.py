"""Projections: one Firestore document per Stripe object, kept at the newest state seen.

Stripe delivers events late, twice and out of order, so a projection is written only by an
event that *orders after* the one that last wrote it. The order is a total order on
`(deleted, created, rank, event id)`:

1. a deletion is final: once a document is marked deleted, no other event rewrites it;
2. a newer `created` wins (Stripe's one-second resolution);
3. within the same second, the state further along the object's lifecycle wins (`rank`,
   e.g. a subscription's `canceled` over `active` over `incomplete`);
4. what is left (same second, same rank) goes to the larger event ID, so the result never
   depends on arrival order.

The document holds the projected fields at top level under Stripe's names, plus `livemode`,
`account`, `last_event_id`, `last_event_created`, and the whole object under `object`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.cloud import firestore

from handlers import on
from stripe_ledger.context import HandlerContext

__all__ = ["Projection", "lifecycle", "register_projection"]

Fields = Callable[[Mapping[str, Any]], dict[str, Any]]
Rank = Callable[[Mapping[str, Any]], tuple[int, ...]]


def lifecycle(*stages: str | tuple[str, ...], key: str = "status") -> Rank:
    """A rank from lifecycle stages in order; a tuple is one stage of equal states."""
    ranks = {}
    for position, stage in enumerate(stages, start=1):
        for state in (stage,) if isinstance(stage, str) else stage:
            ranks[state] = position
    return lambda fields: (ranks.get(fields.get(key) or "", 0),)


def _no_rank(fields: Mapping[str, Any]) -> tuple[int, ...]:
    return ()


@dataclass(frozen=True)
class Projection:
    """How one Stripe object family is projected into one collection."""

    collection: str
    fields: Fields
    rank: Rank = field(default=_no_rank)
    deleting: frozenset[str] = frozenset()
    """Event types that mark the object deleted (`deleted: true` is always honoured too)."""

    def ref(self, ctx: HandlerContext) -> firestore.DocumentReference | None:
        object_id = ctx.received.object_id
        if object_id is None:
            return None
        return ctx.db.collection(self.collection).document(object_id)

    def document(self, ctx: HandlerContext) -> dict[str, Any]:
        """The projection document this event would write."""
        received, obj = ctx.received, ctx.object
        document = self.fields(obj)
        document.update(
            deleted=bool(obj.get("deleted")) or received.type in self.deleting,
            livemode=received.livemode,
            account=received.account,
            last_event_id=received.id,
            last_event_created=received.created,
            object=obj,
        )
        return document

    def order(self, document: Mapping[str, Any]) -> tuple[Any, ...]:
        """Where the state in `document` stands in the projection's total order."""
        return (
            bool(document.get("deleted")),
            int(document.get("last_event_created") or 0),
            self.rank(document),
            str(document.get("last_event_id") or ""),
        )

    def apply(self, ctx: HandlerContext) -> None:
        """Write this event's state unless the document already holds a later one."""
        ref = self.ref(ctx)
        if ref is None:  # objects without an ID (invoice.upcoming) have nothing to project
            return
        current = ctx.get(ref).to_dict()
        document = self.document(ctx)
        # An event that does not order after the current state (a replay, a late or older
        # event) leaves the document untouched: no write, no regression.
        if current is not None and (
            current.get("deleted") or self.order(document) <= self.order(current)
        ):
            return
        ctx.tx.set(ref, document)


def register_projection(projection: Projection, *event_types: str) -> None:
    """Register `projection` as the handler of `event_types`, with its read declared."""

    def reads(ctx: HandlerContext) -> list[firestore.DocumentReference]:
        ref = projection.ref(ctx)
        return [] if ref is None else [ref]

    def project(ctx: HandlerContext) -> None:
        projection.apply(ctx)

    project.__qualname__ = f"project_{projection.collection}"
    on(*event_types, reads=reads)(project)
