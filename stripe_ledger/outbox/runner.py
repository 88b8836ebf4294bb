"""Running tasks: claim a task with a lease, run its executor, record what it did; find the
due ones; revive dead ones; list them. The lease rules are `stripe_ledger.lease`'s, the same
as the ledger's."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from stripe_ledger import lease, logs
from stripe_ledger.config import Settings
from stripe_ledger.errors import LedgerUnavailable
from stripe_ledger.firestore_client import Snapshot, translated
from stripe_ledger.ledger import Clock, utc_now
from stripe_ledger.outbox.batch import TaskBatch
from stripe_ledger.outbox.tasks import (
    LIST_FIELDS,
    TaskPage,
    TaskResult,
    TaskRun,
    TaskStatus,
    describe,
    logged,
    retry_delay,
    task_id,
)

if TYPE_CHECKING:
    from stripe_ledger.registry import HandlerRegistry
    from stripe_ledger.verify import VerifiedEvent

__all__ = ["Outbox", "run_enqueued"]


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
        return TaskBatch(
            received,
            tx,
            db=self.db,
            registry=self.registry,
            ref=self.ref,
            clock=self.clock,
            retention=timedelta(days=self.settings.retention_days),
        )

    # --- running --------------------------------------------------------------------------

    def run_key(self, key: str, *, due_only: bool = False) -> TaskResult:
        """Run the task with idempotency key `key` now (if nobody holds it and it is not
        final); `due_only` also leaves it if its next attempt is not due yet."""
        try:
            with translated("read a task"):
                snapshot = self.ref(key).get()
        except LedgerUnavailable as error:
            return logged(TaskResult(key, None, None, None, "unavailable", error=describe(error)))
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
        if status not in (TaskStatus.PENDING, TaskStatus.RUNNING):
            return logged(result("invalid", error=f"unknown task status {status!r}"))
        judged = lease.judge(
            dict(record),
            running=TaskStatus.RUNNING,
            max_attempts=self.settings.task_max_attempts,
            now=now,
            attempt_word="run",
        )
        if judged.verdict is lease.Verdict.LIVE:
            return result("in_flight", attempt=attempts)
        due = record.get("next_attempt_at")
        if status == TaskStatus.PENDING and due_only and due is not None and due > now:
            return result("not_due", attempt=attempts, next_attempt_at=due)
        executor = self.registry.executor(str(task))
        if executor is None:
            return logged(
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
        try:
            if judged.abandoned is not None:
                fields["last_error"] = judged.abandoned
            if judged.verdict is lease.Verdict.EXHAUSTED:
                fields.update(status=TaskStatus.DEAD, lease_expires_at=None, next_attempt_at=None)
                fields["expire_at"] = now + timedelta(days=self.settings.retention_days)
                if self._compare_and_set(ref, update_time, fields) is None:
                    return result("in_flight", attempt=attempts)
                return logged(result("dead", attempt=attempts, error=judged.abandoned))
            expires = lease.held(now, self.settings.lease_seconds)
            fields.update(
                status=TaskStatus.RUNNING,
                attempts=attempts + 1,
                lease_expires_at=expires,
                next_attempt_at=expires,  # a run that never finishes is due again then
            )
            claim_time = self._compare_and_set(ref, update_time, fields)
        except LedgerUnavailable as error:
            return logged(result("unavailable", attempt=attempts, error=describe(error)))
        if claim_time is None:
            return result("in_flight", attempt=attempts)
        payload = dict(record.get("payload") or {})
        run = TaskRun(str(task), key, payload, event_id, attempts + 1, db=self.db)
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
            error_text = describe(error)
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
        except LedgerUnavailable as error:
            # The task stays `running`: it is run again once its lease ends.
            outcome, next_attempt = "unavailable", None
            error_text = f"{error_text + '; ' if error_text else ''}{describe(error)}"
        return logged(
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
        None when it had changed. Raises `LedgerUnavailable`."""
        return lease.compare_and_set(
            self.db, ref, update_time, fields, read_back=self.settings.read_back_seconds
        ).update_time

    # --- due tasks ------------------------------------------------------------------------

    def due(self, limit: int) -> list[Snapshot]:
        """Up to `limit` tasks to run now, longest waiting first: `pending` ones whose next
        attempt has come, and `running` ones whose lease has ended (their `next_attempt_at`).

        One query per status, each served by the composite index (status, next_attempt_at).
        Raises `LedgerUnavailable`.
        """
        now = self.clock()
        found: list[Snapshot] = []
        for status in (TaskStatus.PENDING, TaskStatus.RUNNING):
            with translated("query the due tasks"):
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
            with translated("read a task"):
                snapshot = self.ref(key).get()
        except LedgerUnavailable as error:
            return TaskResult(key, None, None, None, "unavailable", error=describe(error))
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
        try:
            revived = self._compare_and_set(snapshot.reference, snapshot.update_time, fields)
        except LedgerUnavailable as error:
            return TaskResult(key, task, event_id, status, "unavailable", error=describe(error))
        if revived is None:
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


def run_enqueued(outbox: Outbox, batch: TaskBatch) -> list[TaskResult]:
    """After the commit of `batch`'s transaction: run the tasks it created, in this request.

    Never raises an `Exception`: the event is committed and its tasks are durable, so whatever
    goes wrong here (an executor raising, Firestore unreachable) is left to `outbox run`.
    """
    if not batch.created:
        return []
    try:
        results = []
        write_results = batch.tx.write_results or []
        for created in batch.created:
            update_time = None
            if created.index < len(write_results):
                update_time = write_results[created.index].update_time
            if update_time is None:  # never expected; read the task to claim it safely
                results.append(outbox.run_key(created.item.key))
            else:
                results.append(outbox.run_record(created.ref, update_time, created.document))
        return results
    except Exception as error:  # noqa: BLE001 - the tasks stay pending; `outbox run` retries
        event_id = batch.received.id
        logs.log(
            logging.ERROR,
            f"could not run the tasks of event {event_id} after its commit: "
            f"{describe(error)}; `stripe-ledger outbox run` will",
            exc_info=error,
            event_id=event_id,
        )
        return []
