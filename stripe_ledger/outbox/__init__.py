"""The transactional outbox: side effects enqueued in an event's transaction, run after it.

A handler that must act outside Firestore (send an e-mail, call Stripe's API, publish a
message) calls `ctx.enqueue(task, payload, key=...)`. The task is created in
`stripe_tasks/{sha256(key)}` by the event's own transaction (`batch`), so it exists exactly
when the event's effects do. After the commit, the delivery runs the task's executor
(registered with `@task(name)`); a task whose executor raised, or whose run never finished, is
run again by `stripe-ledger outbox run` or the scheduled `run_outbox` function (`runner`),
with backoff, until it succeeds or is dead-lettered after STRIPE_TASK_MAX_ATTEMPTS runs. An
executor therefore runs at least once, and every run carries the task's idempotency key
(`tasks`), which it passes on (as Stripe's `Idempotency-Key`, for instance) so that a repeated
run has no repeated effect. A key is enqueued once: a later enqueue of a key that exists, from
any event, is a no-op.

Runs hold a task with the ledger's lease (`stripe_ledger.lease`): a run claims it with a
compare-and-set on its `update_time` (pending -> running, with a lease) and records its result
with a write conditional on that claim, so two runners never both hold a task, and a runner
whose lease was taken over cannot overwrite the new holder's result. See docs/outbox.md.
"""

from stripe_ledger.outbox.batch import TaskBatch
from stripe_ledger.outbox.runner import Outbox, run_enqueued
from stripe_ledger.outbox.tasks import (
    LIST_FIELDS,
    MAX_KEY_LENGTH,
    TaskPage,
    TaskResult,
    TaskRun,
    TaskStatus,
    UnknownTask,
    check_key,
    retry_delay,
    task_id,
)

__all__ = [
    "LIST_FIELDS",
    "MAX_KEY_LENGTH",
    "Outbox",
    "TaskBatch",
    "TaskPage",
    "TaskResult",
    "TaskRun",
    "TaskStatus",
    "UnknownTask",
    "check_key",
    "retry_delay",
    "run_enqueued",
    "task_id",
]
