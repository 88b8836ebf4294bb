"""Handlers and an executor that tests/test_one_pipeline.py loads into the served function and
the console script (STRIPE_HANDLER_MODULES=tests.pipeline_handlers).

Only the public registration API is used (`handlers.on`, `handlers.task`, the context's
documented attributes), so this module survives a rewrite of the core. Faults are injected by
fields of the event's object, which for a thin event is the object fetched from (fake) Stripe:

- `outage_while_exists` (a path) with `outage` (a `google.api_core.exceptions` class name,
  e.g. `ServiceUnavailable` or `Aborted`): raise that Firestore error while the file exists;
- `fail_while_exists` (a path): raise `RuntimeError` while the file exists, from a line that
  carries the marker `HANDLER-RAISES-HERE` (the test finds its number in this file);
- `raise_key_error` (a string): raise `KeyError(that string)`.

`test.rmw.declared` and `test.rmw.undeclared` have two handlers each that read-modify-write
the same `accounts/{object.id}` document, the README's `extend_access` pattern, with and
without `reads=`. `test.observe` writes `test_effects/{event_id}` and enqueues
`test.observe_commit`, whose executor records what it finds committed when it runs.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from handlers import on, task

__all__ = [
    "apply_customer",
    "count_invoice",
    "extend_access",
    "observe",
    "observe_commit",
    "tally_again",
    "tally_undeclared",
]

OBSERVED = "test_observed"


@on("customer.updated", "customer.created")
def apply_customer(ctx: Any) -> None:
    """Raise what the object's fields ask for (see the module); otherwise add one to
    `test_effects/{object.id}`, so a change applied twice counts 2."""
    obj = ctx.object
    if (path := obj.get("outage_while_exists")) and os.path.exists(path):
        raise getattr(gexc, str(obj.get("outage") or "ServiceUnavailable"))("injected outage")
    if (path := obj.get("fail_while_exists")) and os.path.exists(path):
        raise RuntimeError("injected handler fault")  # HANDLER-RAISES-HERE
    if (key := obj.get("raise_key_error")) is not None:
        raise KeyError(key)
    ref = ctx.db.collection("test_effects").document(str(obj["id"]))
    ctx.tx.set(ref, {"count": firestore.Increment(1)}, merge=True)


def _account(ctx: Any) -> firestore.DocumentReference:
    ref: firestore.DocumentReference = ctx.db.collection("accounts").document(str(ctx.object["id"]))
    return ref


@on("test.rmw.declared", reads=lambda ctx: [_account(ctx)])
def extend_access(ctx: Any) -> None:
    """The README's example handler."""
    account = ctx.get(_account(ctx))
    paid = account.get("invoices_paid") if account.exists else 0
    ctx.tx.set(_account(ctx), {"invoices_paid": paid + 1, "active": True}, merge=True)


@on("test.rmw.declared", reads=lambda ctx: [_account(ctx)])
def count_invoice(ctx: Any) -> None:
    """A second handler for the same type and the same document, also declared."""
    account = ctx.get(_account(ctx))
    paid = account.get("invoices_paid") if account.exists else 0
    ctx.tx.set(_account(ctx), {"invoices_paid": paid + 1, "counted": True}, merge=True)


@on("test.rmw.undeclared")
def tally_undeclared(ctx: Any) -> None:
    """The same pattern without `reads=`: the read costs its own round trip."""
    account = ctx.get(_account(ctx))
    paid = account.get("invoices_paid") if account.exists else 0
    ctx.tx.set(_account(ctx), {"invoices_paid": paid + 1, "active": True}, merge=True)


@on("test.rmw.undeclared")
def tally_again(ctx: Any) -> None:
    """The second handler of `test.rmw.undeclared`, also without `reads=`."""
    account = ctx.get(_account(ctx))
    paid = account.get("invoices_paid") if account.exists else 0
    ctx.tx.set(_account(ctx), {"invoices_paid": paid + 1, "counted": True}, merge=True)


@on("test.observe")
def observe(ctx: Any) -> None:
    """Write the event's effect and enqueue an executor that looks for it."""
    ctx.tx.set(ctx.db.collection("test_effects").document(ctx.event_id), {"count": 1})
    ctx.enqueue("test.observe_commit", {"event_id": ctx.event_id})


@functools.cache
def _client(project: str) -> firestore.Client:
    return firestore.Client(project=project)


@task("test.observe_commit")
def observe_commit(run: Any) -> None:
    """Record what is committed when the executor runs: the event's ledger record and the
    handler's write, read from a separate client (not through any transaction)."""
    db = _client(os.environ["GOOGLE_CLOUD_PROJECT"])
    event_id = str(run.payload["event_id"])
    ledger = db.collection("stripe_events").document(event_id).get()
    effect = db.collection("test_effects").document(event_id).get()
    db.collection(OBSERVED).document(event_id).set(
        {
            "ledger_status": ledger.get("status") if ledger.exists else None,
            "effect_exists": effect.exists,
            "run_event_id": run.event_id,
        }
    )
