"""Handlers the end-to-end tests load into the served function via STRIPE_HANDLER_MODULES.

`test.counter` adds one to `test_effects/{event_id}` by reading and rewriting it inside the
event's transaction, so an event applied twice would count 2. Fields of the event's object
inject behaviour: `fail_while_exists` (raise while that file exists), `hang_marker` (create
that file, then hang inside the transaction until killed) and `sleep` (seconds).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from google.cloud import firestore

from handlers import on
from stripe_ledger.context import HandlerContext

EFFECTS = "test_effects"


def _counter(ctx: HandlerContext) -> firestore.DocumentReference:
    return ctx.db.collection(EFFECTS).document(ctx.event_id)


@on("test.counter", reads=lambda ctx: [_counter(ctx)])
def count(ctx: HandlerContext) -> None:
    ref = _counter(ctx)
    snapshot = ctx.get(ref)
    ctx.tx.set(ref, {"count": (snapshot.get("count") if snapshot.exists else 0) + 1})
    behaviour = ctx.object
    if (path := behaviour.get("fail_while_exists")) and os.path.exists(path):
        raise RuntimeError("injected fault")
    if path := behaviour.get("hang_marker"):
        Path(path).touch()
        time.sleep(120)
    if delay := behaviour.get("sleep"):
        time.sleep(float(delay))
