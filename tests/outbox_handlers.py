"""A handler and a task executor that the outbox's end-to-end tests load into the served
function, the console script and `run_outbox` (STRIPE_HANDLER_MODULES=tests.outbox_handlers).

`test.outbox` adds one to `test_effects/{event_id}` in the event's transaction, then enqueues
one `test.record` task per entry of its object's `tasks` list (`key`, `payload`), or one with
the default key. `test.record` counts every run in `test_task_runs/{task_id(key)}` (outside
any transaction, so a run that happens twice counts twice), then raises on its first
`payload.fail_runs` runs, and while the file `payload.fail_while_exists` exists.
"""

from __future__ import annotations

import functools
import os

from google.cloud import firestore

from handlers import on, task
from stripe_ledger.context import HandlerContext
from stripe_ledger.outbox import TaskRun, task_id

EFFECTS = "test_effects"
RUNS = "test_task_runs"


@functools.cache
def _client(project: str) -> firestore.Client:
    return firestore.Client(project=project)


@on("test.outbox")
def enqueue_records(ctx: HandlerContext) -> None:
    ctx.tx.set(
        ctx.db.collection(EFFECTS).document(ctx.event_id),
        {"count": firestore.Increment(1)},
        merge=True,
    )
    for spec in ctx.object.get("tasks", [{}]):
        ctx.enqueue("test.record", spec.get("payload"), key=spec.get("key"))


@task("test.record")
def record(run: TaskRun) -> None:
    _client(os.environ["GOOGLE_CLOUD_PROJECT"]).collection(RUNS).document(task_id(run.key)).set(
        {
            "key": run.key,
            "runs": firestore.Increment(1),
            "attempts": firestore.ArrayUnion([run.attempt]),
            "event_id": run.event_id,
        },
        merge=True,
    )
    if run.attempt <= int(run.payload.get("fail_runs", 0)):
        raise RuntimeError(f"injected executor fault on run {run.attempt}")
    if (path := run.payload.get("fail_while_exists")) and os.path.exists(path):
        raise RuntimeError("injected executor fault (the fault file exists)")
