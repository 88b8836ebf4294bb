"""Projections: one Firestore document per Stripe object, ending at Stripe's state.

Stripe delivers events late, twice and out of order, so a projection is written only by a
state that comes *after* the one that last wrote it (`Projection.replaces`):

1. a deletion is final: a document marked deleted is only ever replaced by another deletion
   that comes after it, never resurrected by a late update; only Stripe's word deletes;
2. a later state wins, on two clocks: an event's `created` says only which second its change
   happened in, a state read from Stripe's API (thin events, refetch mode) is as of the
   moment it was read, to the millisecond (`last_event_created` then holds that float). A
   state comes after another only if every moment it can stand for is later, so no state is
   skipped because of the precision of a timestamp;
3. two different states that the clocks cannot order (within one second) are a same-second
   conflict: when the event can be settled from the API (`VerifiedEvent.settleable`, a key
   is set) the projection raises `SettleFromApi`, and the pipeline reads the object and
   applies the event again with the state read, which wins (`VerifiedEvent.settles`);
   without a key, the state further along the object's lifecycle wins (`rank`, then
   counters that only grow), then the larger event ID, and a WARNING says the rule may be
   wrong (an object that went back, `past_due` to `active`). The same state twice (one
   change's several events) is no conflict.

Without a key the order is total, so the document holds the state of the greatest event
delivered so far whatever the delivery order; with one, it ends at the API's state. An event
that does not come after the stored state (a late or older event, or a replay) writes
nothing. Each document holds the projected fields at top level under Stripe's names (null
where the object lacks them), plus `livemode`, `account`, `last_event_id`,
`last_event_created`, and the whole object under `object` (adapted where Firestore's limits
require, see `handlers._storable`); the rank of a stored state is computed again from its
`object`.

A projection edits its document (declared with `edits=`, see `stripe_ledger.context.Edits`):
it is read without a lock, in one batch with its followers' documents, and written in the
event's transaction with a precondition that it did not change since. Concurrent events for
one object (an invoice's five events at each renewal) never wait on each other's locks; the
one whose document changed first runs again from the start, so none overwrites another's
state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.cloud import firestore

from handlers import on, registry
from handlers._storable import storable_document
from stripe_ledger.context import HandlerContext, SettleFromApi
from stripe_ledger.logs import log
from stripe_ledger.verify import VerifiedEvent

__all__ = [
    "Fields",
    "Follower",
    "Projection",
    "Rank",
    "counters",
    "document_id",
    "has_projectable_id",
    "lifecycle",
    "reference",
    "register_projection",
]

Fields = Callable[[Mapping[str, Any]], dict[str, Any]]
"""The projected fields of a Stripe object, under Stripe's names."""

Rank = Callable[[Mapping[str, Any]], tuple[int, ...]]
"""How far along its lifecycle a Stripe object is; only compared within one second."""


def lifecycle(*stages: str | tuple[str, ...], key: str = "status") -> Rank:
    """A rank from the stages of `key` in lifecycle order; a tuple is one stage of equals.

    Values not listed (new ones Stripe may add) rank below every listed stage.
    """
    ranks = {}
    for position, stage in enumerate(stages, start=1):
        for state in (stage,) if isinstance(stage, str) else stage:
            ranks[state] = position

    def rank(obj: Mapping[str, Any]) -> tuple[int, ...]:
        value = obj.get(key)
        return (ranks.get(value, 0) if isinstance(value, str) else 0,)

    return rank


def counters(*keys: str) -> Rank:
    """A rank from fields that only grow over an object's life (amounts, flags, counts)."""

    def rank(obj: Mapping[str, Any]) -> tuple[int, ...]:
        values = (obj.get(key) for key in keys)
        return tuple(int(value) if isinstance(value, int | float) else 0 for value in values)

    return rank


def reference(value: Any) -> str | None:
    """The ID in an expandable field: the string itself, or the `id` of an expanded object."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) else None


def document_id(value: Any) -> str | None:
    """`value` if Firestore can hold it as a document ID (a non-empty string of at most
    1,500 bytes, without `/`, not `.`, `..` or `__x__`), else None."""
    if not isinstance(value, str) or not 0 < len(value.encode()) <= 1500:
        return None
    if "/" in value or value in (".", "..") or (value.startswith("__") and value.endswith("__")):
        return None
    return value


def has_projectable_id(received: VerifiedEvent) -> bool:
    """Whether the event's object has an ID usable as a Firestore document ID.

    Objects without one (`invoice.upcoming`, some test fixtures) have nothing to project: no
    projection applies to their events, which are therefore recorded `ignored`.
    """
    return document_id(received.object_id) is not None


@dataclass(frozen=True)
class Follower:
    """What keeps a document derived from a projection's (a customer's access) in step with
    it, in the same transaction.

    `follow(ctx, state)` runs on every event the projection applies to, after the projection
    decided, with the document's state now (the event's if it was written, the stored one
    if the event came late): so what it derives is always derived from the projection's
    state, never from a late event's. It changes documents through `ctx.edit`, which
    `edits(ctx)` declares (it may name more once what it named is `ctx.cached`)."""

    edits: Callable[[HandlerContext], Iterable[firestore.DocumentReference]]
    follow: Callable[[HandlerContext, Mapping[str, Any]], None]


@dataclass(frozen=True)
class Projection:
    """How one Stripe object family is projected into one collection."""

    collection: str
    fields: Fields
    ranks: tuple[Rank, ...] = ()
    deleting: frozenset[str] = frozenset()
    """Event types that delete the object. A projection with any also keeps a `deleted`
    field, true after such an event or for an object that says `deleted: true`."""
    followers: list[Follower] = field(default_factory=list, compare=False, hash=False)
    """Derived documents kept with this projection (`follow`)."""

    def follow(self, follower: Follower) -> None:
        """Keep `follower`'s documents in step with this projection (see `Follower`)."""
        self.followers.append(follower)

    def edits(self, ctx: HandlerContext) -> list[firestore.DocumentReference]:
        """The documents applying the event edits (read without a lock): its object's, then
        its followers'."""
        return [self.ref(ctx), *(ref for f in self.followers for ref in f.edits(ctx))]

    def applies_to(self, received: VerifiedEvent) -> bool:
        """Whether `received`'s object can be projected (it has a usable ID)."""
        return has_projectable_id(received)

    def ref(self, ctx: HandlerContext) -> firestore.DocumentReference:
        """The document of the event's object."""
        object_id = ctx.received.object_id
        if object_id is None:  # registrations apply only to objects with an ID
            raise ValueError(f"{ctx.event_type} has no object ID to project")
        return ctx.db.collection(self.collection).document(object_id)

    def document(self, received: VerifiedEvent) -> dict[str, Any]:
        """The projection document this event would write."""
        obj = received.object
        document = self.fields(obj)
        if self.deleting:
            document["deleted"] = obj.get("deleted") is True or received.type in self.deleting
        document.update(
            livemode=received.livemode,
            account=received.account,
            last_event_id=received.id,
            last_event_created=received.state_time,
            object=obj,
        )
        return document

    def rank(self, obj: Mapping[str, Any]) -> tuple[int, ...]:
        """Where `obj` stands in its lifecycle (compared only within one second)."""
        return tuple(value for rank in self.ranks for value in rank(obj))

    def order(self, document: Mapping[str, Any]) -> tuple[bool, float, tuple[int, ...], str]:
        """Where the state in `document` stands in the total order of snapshot states (what
        `replaces` amounts to without a key)."""
        obj = document.get("object")
        return (
            document.get("deleted") is True,
            float(document.get("last_event_created") or 0),
            self.rank(obj if isinstance(obj, Mapping) else {}),
            str(document.get("last_event_id") or ""),
        )

    def apply(self, ctx: HandlerContext) -> None:
        """Write this event's state unless the document already holds a later one."""
        current = ctx.edit(self.ref(ctx))  # empty when the object has no document yet
        document = storable_document(self.document(ctx.received))
        # An event that does not order after the stored state (a late or older event, or a
        # replay of the one that wrote it) leaves the document as read: no write at all.
        if not current or self.replaces(ctx.received, document, current):
            current.clear()
            current.update(document)
        for follower in self.followers:
            follower.follow(ctx, current)

    def replaces(
        self, received: VerifiedEvent, document: Mapping[str, Any], current: Mapping[str, Any]
    ) -> bool:
        """Whether `document`, the state `received` carries, comes after `current`'s.

        Raises `SettleFromApi` for two different states within one second when the event
        can be settled from Stripe's API; without a key, logs a WARNING and applies the
        deterministic rule (lifecycle rank, then event ID).
        """
        deleted, was_deleted = document.get("deleted") is True, current.get("deleted") is True
        if deleted != was_deleted:
            return deleted  # a deletion is final
        if received.settles is not None and received.settles == current.get("last_event_id"):
            return True  # read from the API after the stored state, to settle a conflict
        new, old = document.get("last_event_created"), current.get("last_event_created")
        if _after(new, old):
            return True
        if _after(old, new):
            return False
        if document.get("object") != current.get("object"):
            stored_event = str(current.get("last_event_id") or "")
            if received.settleable:
                kind = str(received.object.get("object"))
                raise SettleFromApi(kind, str(received.object_id), stored_event)
            self._warn_unsettled(received, stored_event)
        return self._tiebreak(document) > self._tiebreak(current)

    def _tiebreak(self, document: Mapping[str, Any]) -> tuple[tuple[int, ...], str]:
        obj = document.get("object")
        return self.rank(obj if isinstance(obj, Mapping) else {}), str(
            document.get("last_event_id") or ""
        )

    def _warn_unsettled(self, received: VerifiedEvent, stored_event: str) -> None:
        log(
            logging.WARNING,
            f"{self.collection}/{received.object_id}: two different states within one "
            f"second (events {stored_event} and {received.id}); the events alone cannot "
            "order them, so the one further along the lifecycle (then the larger event ID) "
            "is kept, which is wrong if the object went back (past_due to active); set "
            "STRIPE_API_KEY to settle such conflicts from Stripe's API, or run "
            "`stripe-ledger reconcile`",
            event_id=received.id,
            event_type=received.type,
            object_id=received.object_id,
            collection=self.collection,
        )


def _after(state_time: Any, other: Any) -> bool:
    """Whether every moment `state_time` can stand for is later than every moment `other`
    can. A state read from the API is as of one moment (a float, to the millisecond); an
    event's `created` (an integer) says only which second its change happened in."""
    time, other_time = float(state_time or 0), float(other or 0)
    if isinstance(other, float):
        return time > other_time
    return time >= other_time + 1


PROJECTIONS: list[Projection] = []
"""Every registered projection (the built-in ones once `handlers.BUILTIN_MODULES` are
imported): their collections are what the deployment exempts, indexes and locks."""


def register_projection(
    projection: Projection, *event_types: str, family: tuple[str, str] | None = None
) -> None:
    """Register `projection` as the handler of `event_types`, with its edits declared.

    It applies only to events whose object has an ID, so the others are recorded `ignored`.
    `family` is `(object type, event type)`: a thin event of a type no handler takes about an
    object of that type (a thin-only type, `v1.customer.subscription.past_due`) runs that
    event type's handlers on the fetched object (`HandlerRegistry.family`).
    """
    PROJECTIONS.append(projection)
    if family is not None:
        registry.family(*family)

    def project(ctx: HandlerContext) -> None:
        projection.apply(ctx)

    project.__qualname__ = f"project_{projection.collection}"
    on(*event_types, when=projection.applies_to, edits=projection.edits)(project)
