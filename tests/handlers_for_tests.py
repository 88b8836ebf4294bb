"""Handlers the end-to-end tests load into the served function via STRIPE_HANDLER_MODULES.

`test.counter` adds one to `test_effects/{event_id}` by reading and rewriting it inside the
event's transaction, so an event applied twice would count 2. `test.tally` adds the same one
with a server-side increment and reads nothing, like the projections (its first delivery is
claimed by its commit). Fields of the event's object inject behaviour: `fail_while_exists`
(raise while that file exists), `hang_marker` (create that file, then hang inside the
transaction until killed), `sleep` (seconds) and `runs_dir` (write there, for each run, a
file holding its start and end on the monotonic clock).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from google.cloud import firestore

from handlers import on
from stripe_ledger.context import HandlerContext

EFFECTS = "test_effects"


def _counter(ctx: HandlerContext) -> firestore.DocumentReference:
    return ctx.db.collection(EFFECTS).document(ctx.event_id)


@on("test.counter", reads=lambda ctx: [_counter(ctx)])
def count(ctx: HandlerContext) -> None:
    started = time.monotonic()
    ref = _counter(ctx)
    snapshot = ctx.get(ref)
    ctx.tx.set(ref, {"count": (snapshot.get("count") if snapshot.exists else 0) + 1})
    _behave(ctx, started)


@on("test.tally")
def tally(ctx: HandlerContext) -> None:
    started = time.monotonic()
    ctx.tx.set(_counter(ctx), {"count": firestore.Increment(1)}, merge=True)
    _behave(ctx, started)


def _behave(ctx: HandlerContext, started: float) -> None:
    behaviour = ctx.object
    if (path := behaviour.get("fail_while_exists")) and os.path.exists(path):
        raise RuntimeError("injected fault")
    if path := behaviour.get("hang_marker"):
        Path(path).touch()
        time.sleep(120)
    if delay := behaviour.get("sleep"):
        time.sleep(float(delay))
    if runs := behaviour.get("runs_dir"):
        run = Path(runs) / f"{ctx.event_id}.{uuid.uuid4().hex}"
        run.write_text(f"{started} {time.monotonic()}")
