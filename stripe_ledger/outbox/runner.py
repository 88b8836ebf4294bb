"""The transactional outbox: side effects enqueued in an event's transaction, run after it.

A handler that must act outside Firestore (send an e-mail, call Stripe's API, publish a
message) calls `ctx.enqueue(task, payload, key=...)`. The task is created in
`stripe_tasks/{sha256(key)}` by the event's own transaction, so it exists exactly when the
event's effects do. After the commit, the delivery runs the task's executor (registered with
`@task(name)`); a task whose executor raised, or whose run never finished, is run again by
`stripe-ledger outbox run` or the scheduled `run_outbox` function, with backoff, until it
succeeds or is dead-lettered after STRIPE_TASK_MAX_ATTEMPTS runs. An executor therefore runs
at least once, and every run carries the task's idempotency key, which it passes on (as
Stripe's `Idempotency-Key`, for instance) so that a repeated run has no repeated effect. A key
is enqueued once: a later enqueue of a key that exists, from any event, is a no-op.

Runs follow the ledger's pattern (`stripe_ledger/ledger.py`): a run claims the task with a
compare-and-set on its `update_time` (pending -> running, with a lease) and records its result
with a write conditional on that claim, so two runners never both hold a task, and a runner
whose lease was taken over cannot overwrite the new holder's result. See docs/outbox.md.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from stripe_ledger import logs
from stripe_ledger.config import Settings
from stripe_ledger.context import read_through
from stripe_ledger.ledger import Clock, Snapshot, utc_now

if TYPE_CHECKING:
    from stripe_ledger.context import HandlerContext
    from stripe_ledger.registry import HandlerRegistry
    from stripe_ledger.verify import VerifiedEvent

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
    "retry_delay",
    "run_enqueued",
    "task_id",
]

MAX_KEY_LENGTH = 255
"""Stripe accepts idempotency keys of up to 255 characters."""

RETRY_BASE_SECONDS = 30
RETRY_CAP_SECONDS = 3600

LIST_FIELDS = (
    "task",
    "key",
    "status",
    "attempts",
    "event_id",
    "next_attempt_at",
    "created_at",
    "completed_at",
    "last_error",
)
"""The task fields a listing reads (a projection: payloads are never fetched)."""

_KEY = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: an HTTP header value as it is
_MAX_ERROR_CHARS = 1000
_UNAVAILABLE = (gexc.GoogleAPICallError, gexc.RetryError)
_OK = frozenset({"done", "in_flight", "not_due", "skipped", "would_run", "deferred", "revived"})


class TaskStatus(enum.StrEnum):
    """The `status` field of a task.

    `pending` waits for its first run, or for its next one after a failure (`attempts` and
    `last_error` tell which; `next_attempt_at` says when); `running` is claimed by a run
    until `lease_expires_at`; `done` and `dead` (failed on its last allowed run) are final.
    """

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"


class UnknownTask(LookupError):
    """A handler enqueued a task that no executor is registered for."""


@dataclass(frozen=True)
class TaskRun:
    """What an executor receives: one run of one task."""

    task: str
    key: str
    """The task's idempotency key: the same on every run; pass it on (Stripe's
    `Idempotency-Key`, an e-mail provider's idempotency header, a message ID)."""
    payload: dict[str, Any]
    event_id: str | None
    """The event whose handler enqueued the task."""
    attempt: int
    """1 on the first run, 2 on the second, ..."""

    @property
    def idempotency_key(self) -> str:
        return self.key


@dataclass(frozen=True)
class TaskResult:
    """What one run (or a decision not to run) did to one task.

    `outcome`: `done`; `failed` (the executor raised; `next_attempt_at` says when it runs
    again); `dead` (failed on its last allowed run, or its last run never finished);
    `lease_lost` (the executor ran, but past its lease, and another run took the task over);
    `in_flight` (another run holds it); `not_due`; `skipped` (already done or dead);
    `no_executor` (none registered here for its task); `unavailable` (Firestore);
    `would_run` (dry run); `deferred` (the run's time budget was spent); `revived` (a dead
    task made pending again by `revive`); `missing` (no such task).
    """

    key: str
    task: str | None
    event_id: str | None
    status_before: str | None
    outcome: str
    attempt: int | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
    duration_ms: float | None = None

    @property
    def ok(self) -> bool:
        """Whether nothing is wrong with the task (done, or rightly left for later)."""
        return self.outcome in _OK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TaskPage:
    """Tasks of a listing, newest first, and whether there are more."""

    records: list[dict[str, Any]]
    more: bool


def task_id(key: str) -> str:
    """The task's document ID: keys may hold `/`, and hashed IDs spread writes evenly."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_key(key: object) -> str:
    """`key` if it can be an idempotency key (1-255 visible ASCII characters), else raise."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"a task key must be a non-empty string, got {key!r}")
    if len(key) > MAX_KEY_LENGTH or not _KEY.match(key):
        raise ValueError(
            f"task key {key[:80]!r} must be at most {MAX_KEY_LENGTH} visible ASCII characters "
            "(no spaces): it is sent as an idempotency key"
        )
    return key


def retry_delay(attempts: int, rand: Callable[[], float] = random.random) -> timedelta:
    """How long a task waits after its `attempts`-th run failed.

    30 s, 1 min, 2 min, ... doubling up to one hour, each scaled by a random factor between
    0.5 and 1, so that tasks which failed together (a provider's outage) do not retry together.
    """
    ceiling = min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2 ** max(0, min(attempts - 1, 20)))
    return timedelta(seconds=ceiling * (0.5 + rand() / 2))


@dataclass(frozen=True)
class _Enqueued:
    task: str
    key: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class _Created:
    item: _Enqueued
    ref: firestore.DocumentReference
    document: dict[str, Any]
    index: int  # position of the create among the transaction's writes


class TaskBatch:
    """The tasks that one attempt of an event's transaction enqueues.

    A new batch comes with each attempt's `HandlerContext`, so a transaction retried on
    contention enqueues afresh and default keys count from 0 again: they are stable.
    """

    def __init__(self, outbox: Outbox, received: VerifiedEvent, tx: firestore.Transaction) -> None:
        self.outbox = outbox
        self.received = received
        self.tx = tx
        self.created: list[_Created] = []
        self.existing: list[str] = []
        self._enqueued: dict[str, _Enqueued] = {}
        self._counts: dict[str, int] = {}
        self._written = False

    def add(
        self, task: str, payload: Mapping[str, Any] | None = None, *, key: str | None = None
    ) -> str:
        """Enqueue `task` (see `HandlerContext.enqueue`); return its idempotency key."""
        if self._written:
            raise RuntimeError("tasks are enqueued by handlers, before the transaction commits")
        if self.outbox.registry.executor(task) is None:
            raise UnknownTask(
                f"no executor is registered for task {task!r}: register one with "
                f"@task({task!r}) in a module the function imports"
            )
        if payload is not None and not isinstance(payload, Mapping):
            raise TypeError(f"a task payload must be a mapping, got {type(payload).__name__}")
        count = self._counts.get(task, 0)
        self._counts[task] = count + 1
        key = check_key(f"{self.received.id}:{task}:{count}" if key is None else key)
        earlier = self._enqueued.get(key)
        if earlier is None:
            self._enqueued[key] = _Enqueued(task, key, dict(payload or {}))
        elif earlier.task != task:
            raise ValueError(f"task key {key!r} is already enqueued for task {earlier.task!r}")
        return key

    def write(self) -> None:
        """Create the enqueued tasks that do not exist yet, in the transaction.

        Called once, after the handlers and before the record's completion. The documents are
        read through the transaction in one batch, so a key that another event's transaction
        creates at the same time is serialised by Firestore: one of the two creates it, the
        other sees it (after a retry) and leaves it.
        """
        self._written = True
        if not self._enqueued:
            return
        refs = [self.outbox.ref(key) for key in self._enqueued]
        found = {snapshot.reference.path: snapshot for snapshot in read_through(self.tx, refs)}
        now = self.outbox.clock()
        for ref, item in zip(refs, self._enqueued.values(), strict=True):
            if found[ref.path].exists:
                self.existing.append(item.key)
                continue
            document = self.outbox.new_document(item, self.received, now)
            index = len(self.tx._write_pbs)
            self.tx.create(ref, document)
            self.created.append(_Created(item, ref, document, index))

    def run(self) -> list[TaskResult]:
        """After the commit: run each task this transaction created, in order."""
        results = []
        write_results = self.tx.write_results or []
        for created in self.created:
            update_time = None
            if created.index < len(write_results):
                update_time = write_results[created.index].update_time
            if update_time is None:  # never expected; read the task to claim it safely
                results.append(self.outbox.run_key(created.item.key))
            else:
                results.append(self.outbox.run_record(created.ref, update_time, created.document))
        return results


class Outbox:
    """Creates, runs and lists the tasks of one Firestore collection."""

    def __init__(
        self,
        db: firestore.Client,
        settings: Settings,
        registry: HandlerRegistry,
        clock: Clock = utc_now,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.db = db
        self.settings = settings
        self.registry = registry
        self.clock = clock
        self.rand = rand
        self.collection = db.collection(settings.tasks_collection)

    def ref(self, key: str) -> firestore.DocumentReference:
        """The document of the task with idempotency key `key`."""
        return self.collection.document(task_id(key))

    def batch(self, received: VerifiedEvent, tx: firestore.Transaction) -> TaskBatch:
        """A new batch for one attempt of `received`'s transaction."""
        return TaskBatch(self, received, tx)

    def new_document(
        self, item: _Enqueued, received: VerifiedEvent, now: datetime
    ) -> dict[str, Any]:
        return {
            "task": item.task,
            "key": item.key,
            "payload": item.payload,
            "event_id": received.id,
            "event_type": received.type,
            "status": TaskStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "lease_expires_at": None,
            "last_error": None,
            "created_at": now,
            "updated_at": now,
            "completed_at": None,
            "expire_at": now + timedelta(days=self.settings.retention_days),
        }

    # --- running --------------------------------------------------------------------------

    def run_key(self, key: str, *, due_only: bool = False) -> TaskResult:
        """Run the task with idempotency key `key` now (if nobody holds it and it is not
        final); `due_only` also leaves it if its next attempt is not due yet."""
        try:
            snapshot = self.ref(key).get()
        except _UNAVAILABLE as error:
            return _logged(TaskResult(key, None, None, None, "unavailable", error=_describe(error)))
        if not snapshot.exists:
            return TaskResult(key, None, None, None, "missing", error="no such task")
        return self.run_snapshot(snapshot, due_only=due_only)

    def run_snapshot(
        self, snapshot: Snapshot, *, due_only: bool = True, dry_run: bool = False
    ) -> TaskResult:
        """Claim the task as read in `snapshot` and run it (see `run_record`)."""
        assert snapshot.update_time is not None
        record = snapshot.to_dict() or {}
        return self.run_record(
            snapshot.reference, snapshot.update_time, record, due_only=due_only, dry_run=dry_run
        )

    def run_record(
        self,
        ref: firestore.DocumentReference,
        update_time: datetime,
        record: Mapping[str, Any],
        *,
        due_only: bool = True,
        dry_run: bool = False,
    ) -> TaskResult:
        """Claim the task whose document was `record` at `update_time`, and run it.

        The claim is a compare-and-set on `update_time`: if the task changed since (another
        run claimed it), nothing runs and the outcome is `in_flight`. A task still `running`
        after its lease is taken over, its unfinished run counting as an attempt.
        """
        key, task = str(record.get("key") or ref.id), record.get("task")
        status, attempts = record.get("status"), int(record.get("attempts") or 0)
        event_id = record.get("event_id")

        def result(outcome: str, **details: Any) -> TaskResult:
            return TaskResult(key, task, event_id, status, outcome, **details)

        now = self.clock()
        if status in (TaskStatus.DONE, TaskStatus.DEAD):
            return result("skipped", attempt=attempts)
        if status == TaskStatus.RUNNING:
            lease = record.get("lease_expires_at")
            if lease is not None and lease > now:
                return result("in_flight", attempt=attempts)
        elif status == TaskStatus.PENDING:
            due = record.get("next_attempt_at")
            if due_only and due is not None and due > now:
                return result("not_due", attempt=attempts, next_attempt_at=due)
        else:
            return _logged(result("invalid", error=f"unknown task status {status!r}"))
        executor = self.registry.executor(str(task))
        if executor is None:
            return _logged(
                result(
                    "no_executor",
                    attempt=attempts,
                    error=f"no executor is registered for task {task!r} here: import the "
                    "module that registers it (STRIPE_HANDLER_MODULES)",
                )
            )
        if dry_run:
            return result("would_run", attempt=attempts + 1)
        fields: dict[str, Any] = {"updated_at": now}
        if status == TaskStatus.RUNNING:
            abandoned = f"run {attempts} did not finish within its lease (crash or timeout)"
            fields["last_error"] = abandoned
            if attempts >= self.settings.task_max_attempts:
                fields.update(status=TaskStatus.DEAD, lease_expires_at=None, next_attempt_at=None)
                fields["expire_at"] = now + timedelta(days=self.settings.retention_days)
                if self._compare_and_set(ref, update_time, fields) is None:
                    return result("in_flight", attempt=attempts)
                return _logged(result("dead", attempt=attempts, error=abandoned))
        lease = now + timedelta(seconds=self.settings.lease_seconds)
        fields.update(
            status=TaskStatus.RUNNING,
            attempts=attempts + 1,
            lease_expires_at=lease,
            next_attempt_at=lease,  # a run that never finishes is due again when its lease ends
        )
        try:
            claim_time = self._compare_and_set(ref, update_time, fields)
        except _UNAVAILABLE as error:
            return _logged(result("unavailable", attempt=attempts, error=_describe(error)))
        if claim_time is None:
            return result("in_flight", attempt=attempts)
        run = TaskRun(str(task), key, dict(record.get("payload") or {}), event_id, attempts + 1)
        return self._execute(executor, run, ref, claim_time, str(status))

    def _execute(
        self,
        executor: Callable[[TaskRun], object],
        run: TaskRun,
        ref: firestore.DocumentReference,
        claim_time: datetime,
        status_before: str,
    ) -> TaskResult:
        started = time.perf_counter()
        error_text = next_attempt = None
        try:
            executor(run)
        except Exception as error:  # noqa: BLE001 - recorded on the task, retried with backoff
            error_text = _describe(error)
        now = self.clock()
        retention = now + timedelta(days=self.settings.retention_days)
        fields: dict[str, Any] = {"updated_at": now, "lease_expires_at": None}
        if error_text is None:
            outcome = "done"
            fields.update(status=TaskStatus.DONE, completed_at=now, next_attempt_at=None)
            fields["expire_at"] = retention
        elif run.attempt >= self.settings.task_max_attempts:
            outcome = "dead"
            fields.update(status=TaskStatus.DEAD, last_error=error_text, next_attempt_at=None)
            fields["expire_at"] = retention
        else:
            outcome = "failed"
            next_attempt = now + retry_delay(run.attempt, self.rand)
            fields.update(
                status=TaskStatus.PENDING, last_error=error_text, next_attempt_at=next_attempt
            )
        try:
            if self._compare_and_set(ref, claim_time, fields) is None:
                outcome, next_attempt = "lease_lost", None
                error_text = (
                    f"{error_text + '; ' if error_text else ''}the run outlived its lease "
                    f"({self.settings.lease_seconds} s) and another run took the task over; "
                    "that run's result stands"
                )
        except _UNAVAILABLE as error:
            # The task stays `running`: it is run again once its lease ends.
            outcome, next_attempt = "unavailable", None
            error_text = f"{error_text + '; ' if error_text else ''}{_describe(error)}"
        return _logged(
            TaskResult(
                run.key,
                run.task,
                run.event_id,
                status_before,
                outcome,
                attempt=run.attempt,
                error=error_text,
                next_attempt_at=next_attempt,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
        )

    def _compare_and_set(
        self, ref: firestore.DocumentReference, update_time: datetime, fields: dict[str, Any]
    ) -> datetime | None:
        """Update the task unless it changed since `update_time`; its new update time, or
        None when it had changed."""
        option = self.db.write_option(last_update_time=update_time)
        try:
            result = ref.update(fields, option=option)
        except gexc.FailedPrecondition:
            return None
        updated: datetime = result.update_time
        return updated

    # --- due tasks ------------------------------------------------------------------------

    def due(self, limit: int) -> list[Snapshot]:
        """Up to `limit` tasks to run now, longest waiting first: `pending` ones whose next
        attempt has come, and `running` ones whose lease has ended (their `next_attempt_at`).

        One query per status, each served by the composite index (status, next_attempt_at).
        """
        now = self.clock()
        found: list[Snapshot] = []
        for status in (TaskStatus.PENDING, TaskStatus.RUNNING):
            found.extend(self.due_query(status, now).limit(limit).stream())
        found.sort(key=lambda snapshot: snapshot.get("next_attempt_at"))
        return found[:limit]

    def due_query(self, status: str, now: datetime) -> firestore.Query:
        """Tasks in `status` whose `next_attempt_at` has come, oldest first."""
        return (
            self.collection.where(filter=FieldFilter("status", "==", status))
            .where(filter=FieldFilter("next_attempt_at", "<=", now))
            .order_by("next_attempt_at")
        )

    def run_due(
        self,
        *,
        limit: int = 100,
        dry_run: bool = False,
        workers: int = 1,
        deadline: float | None = None,
        on_result: Callable[[TaskResult], None] | None = None,
    ) -> list[TaskResult]:
        """Run the tasks that are due (see `due`), `workers` at a time.

        `deadline` (a `time.monotonic()` value) stops starting new runs once it has passed:
        the tasks left are `deferred` to the next run. Different tasks never contend.
        """

        def one(snapshot: Snapshot) -> TaskResult:
            if deadline is not None and time.monotonic() >= deadline:
                record = snapshot.to_dict() or {}
                result = TaskResult(
                    str(record.get("key") or snapshot.id),
                    record.get("task"),
                    record.get("event_id"),
                    record.get("status"),
                    "deferred",
                )
            else:
                result = self.run_snapshot(snapshot, dry_run=dry_run)
            if on_result is not None:
                on_result(result)
            return result

        snapshots = self.due(limit)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return list(pool.map(one, snapshots))

    def revive(self, key: str, *, note: str, dry_run: bool = False) -> TaskResult:
        """Make the dead task `key` pending again, due now, with its runs counted from 0.

        For an operator, once the cause of its failures is fixed: `revived` counts how often,
        and `last_note` says who did it. A compare-and-set, so it never races a run. Tasks
        that are not dead are `skipped`.
        """
        try:
            snapshot = self.ref(key).get()
        except _UNAVAILABLE as error:
            return TaskResult(key, None, None, None, "unavailable", error=_describe(error))
        if not snapshot.exists:
            return TaskResult(key, None, None, None, "missing", error="no such task")
        record = snapshot.to_dict() or {}
        task, status, event_id = record.get("task"), record.get("status"), record.get("event_id")
        attempts = record.get("attempts")
        if status != TaskStatus.DEAD:
            reason = f"{status}, not dead"
            return TaskResult(key, task, event_id, status, "skipped", attempts, error=reason)
        if dry_run:
            return TaskResult(key, task, event_id, status, "would_run", attempts)
        now = self.clock()
        fields = {
            "status": TaskStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "lease_expires_at": None,
            "updated_at": now,
            "last_note": note,
            "revived": firestore.Increment(1),
            "expire_at": now + timedelta(days=self.settings.retention_days),
        }
        assert snapshot.update_time is not None
        if self._compare_and_set(snapshot.reference, snapshot.update_time, fields) is None:
            return TaskResult(key, task, event_id, status, "in_flight", attempts)
        return TaskResult(key, task, event_id, status, "revived", 0, next_attempt_at=now)

    # --- listing --------------------------------------------------------------------------

    def list_tasks(
        self, *, status: str | None = None, task: str | None = None, limit: int = 50
    ) -> TaskPage:
        """Up to `limit` tasks, newest first; only the listed fields are read.

        Fits the composite indexes (status, created_at DESC), (task, created_at DESC) and
        (status, task, created_at DESC), or the single-field index on `created_at`.
        """
        query = self.list_query(status=status, task=task).select(LIST_FIELDS)
        snapshots = list(query.limit(limit + 1).stream())
        records = [{"id": s.id, **(s.to_dict() or {})} for s in snapshots[:limit]]
        return TaskPage(records, more=len(snapshots) > limit)

    def list_query(self, *, status: str | None = None, task: str | None = None) -> firestore.Query:
        """Tasks in `status` and of `task` (either optional), newest first."""
        query: firestore.Query = self.collection  # type: ignore[assignment]
        if status is not None:
            query = query.where(filter=FieldFilter("status", "==", status))
        if task is not None:
            query = query.where(filter=FieldFilter("task", "==", task))
        return query.order_by("created_at", direction=firestore.Query.DESCENDING)


def run_enqueued(ctx: HandlerContext) -> list[TaskResult]:
    """After the commit of `ctx`'s transaction: run the tasks it created, in this request.

    Never raises an `Exception`: the event is committed and its tasks are durable, so whatever
    goes wrong here (an executor raising, Firestore unreachable) is left to `outbox run`.
    """
    batch = ctx.tasks
    if batch is None or not batch.created:
        return []
    try:
        return batch.run()
    except Exception as error:  # noqa: BLE001 - the tasks stay pending; `outbox run` retries
        logs.log(
            logging.ERROR,
            f"could not run the tasks of event {ctx.event_id} after its commit: "
            f"{_describe(error)}; `stripe-ledger outbox run` will",
            exc_info=error,
            event_id=ctx.event_id,
        )
        return []


_LEVELS = {
    "done": logging.INFO,
    "failed": logging.WARNING,
    "lease_lost": logging.WARNING,
}


def _logged(result: TaskResult) -> TaskResult:
    """Log one line for a run (or a refusal to run) that an operator should see."""
    level = _LEVELS.get(result.outcome, logging.ERROR)
    message = f"task {result.key} ({result.task}) {result.outcome}"
    if result.attempt is not None:
        message += f" on run {result.attempt}"
    if result.error:
        message += f": {result.error}"
    if result.next_attempt_at is not None:
        message += f"; next run after {result.next_attempt_at.isoformat(timespec='seconds')}"
    logs.log(
        level,
        message,
        task=result.task,
        task_key=result.key,
        task_status=result.outcome,
        event_id=result.event_id,
        attempt=result.attempt,
        duration_ms=result.duration_ms,
        error=result.error,
        next_attempt_at=result.next_attempt_at,
    )
    return result


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:_MAX_ERROR_CHARS]
