"""A handler that counts how often each event's effect is applied (STRIPE_HANDLER_MODULES).

`bench.counter` adds one to `bench_effects/{event_id}` by reading and rewriting it inside
the event's transaction, so an event applied twice would count 2. It touches one projection
document, like the built-in handlers.
"""

from __future__ import annotations

from google.cloud import firestore

from bench._events import COUNTER_EFFECTS, COUNTER_TYPE
from handlers import on
from stripe_ledger.context import HandlerContext

__all__ = ["count"]


def _effect(ctx: HandlerContext) -> firestore.DocumentReference:
    return ctx.db.collection(COUNTER_EFFECTS).document(ctx.event_id)


@on(COUNTER_TYPE, reads=lambda ctx: [_effect(ctx)])
def count(ctx: HandlerContext) -> None:
    """Add one to this event's effect counter."""
    ref = _effect(ctx)
    snapshot = ctx.get(ref)
    ctx.tx.set(ref, {"count": (snapshot.get("count") if snapshot.exists else 0) + 1})
