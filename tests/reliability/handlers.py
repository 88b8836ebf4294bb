"""Handlers the reliability suite loads into the served function (STRIPE_HANDLER_MODULES).

Every event adds one to `reliability_effects/{event_id}` (a server-side increment, in the
event's transaction), so an event applied twice counts 2. `test.flaky` fails on about 10% of
attempts (decided by a hash of the event ID and attempt number, so reruns agree), and
`test.poison` always fails.
"""

from __future__ import annotations

import zlib

from google.cloud import firestore

from handlers import on
from stripe_ledger.context import HandlerContext

EFFECTS = "reliability_effects"


@on("*")
def count_every_event(ctx: HandlerContext) -> None:
    ref = ctx.db.collection(EFFECTS).document(ctx.event_id)
    ctx.tx.set(ref, {"count": firestore.Increment(1)}, merge=True)


@on("test.flaky")
def fail_sometimes(ctx: HandlerContext) -> None:
    if zlib.crc32(f"{ctx.event_id}:{ctx.attempt}".encode()) % 10 == 0:
        raise RuntimeError(f"injected fault on attempt {ctx.attempt}")


@on("test.poison")
def always_fail(ctx: HandlerContext) -> None:
    raise RuntimeError("poison event")
