"""Enqueueing: the tasks one attempt of an event's transaction creates, in that transaction."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from google.cloud import firestore

from stripe_ledger.firestore_client import get_documents, translated, write_count
from stripe_ledger.ledger import Clock
from stripe_ledger.outbox.tasks import TaskStatus, UnknownTask, check_key

if TYPE_CHECKING:
    from stripe_ledger.registry import HandlerRegistry
    from stripe_ledger.verify import VerifiedEvent

__all__ = ["Created", "Enqueued", "TaskBatch", "task_document"]


@dataclass(frozen=True)
class Enqueued:
    task: str
    key: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Created:
    item: Enqueued
    ref: firestore.DocumentReference
    document: dict[str, Any]
    index: int  # position of the create among the transaction's writes


class TaskBatch:
    """The tasks that one attempt of an event's transaction enqueues.

    A new batch comes with each attempt's `HandlerContext`, so a transaction retried on
    contention enqueues afresh and default keys count from 0 again: they are stable.
    """

    def __init__(
        self,
        received: VerifiedEvent,
        tx: firestore.Transaction,
        *,
        db: firestore.Client,
        registry: HandlerRegistry,
        ref: Callable[[str], firestore.DocumentReference],
        clock: Clock,
        retention: timedelta,
    ) -> None:
        self.received = received
        self.db = db
        self.registry = registry
        self.ref = ref
        self.clock = clock
        self.retention = retention
        self.tx = tx
        self.created: list[Created] = []
        self.existing: list[str] = []
        self._enqueued: dict[str, Enqueued] = {}
        self._counts: dict[str, int] = {}
        self._written = False

    def add(
        self, task: str, payload: Mapping[str, Any] | None = None, *, key: str | None = None
    ) -> str:
        """Enqueue `task` (see `HandlerContext.enqueue`); return its idempotency key."""
        if self._written:
            raise RuntimeError("tasks are enqueued by handlers, before the transaction commits")
        if self.registry.executor(task) is None:
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
            self._enqueued[key] = Enqueued(task, key, dict(payload or {}))
        elif earlier.task != task:
            raise ValueError(f"task key {key!r} is already enqueued for task {earlier.task!r}")
        return key

    def write(self) -> None:
        """Create the enqueued tasks that do not exist yet, in the transaction.

        Called once, after the handlers and before the record's completion. The documents are
        read in one batch without a lock (no transaction begins for them, so concurrent
        deliveries never wait on each other) and created on condition that they still do not
        exist: a key that another event creates at the same time fails this commit with
        `AlreadyExists`, an edit conflict, and the unit of work runs again, sees the task and
        leaves it.
        """
        self._written = True
        if not self._enqueued:
            return
        refs = [self.ref(key) for key in self._enqueued]
        with translated("read the tasks to create"):
            found = {snapshot.reference.path: snapshot for snapshot in get_documents(self.db, refs)}
        now = self.clock()
        for ref, item in zip(refs, self._enqueued.values(), strict=True):
            if found[ref.path].exists:
                self.existing.append(item.key)
                continue
            document = task_document(item, self.received, now, self.retention)
            index = write_count(self.tx)
            self.tx.create(ref, document)
            self.created.append(Created(item, ref, document, index))


def task_document(
    item: Enqueued, received: VerifiedEvent, now: datetime, retention: timedelta
) -> dict[str, Any]:
    """A new task's document: pending, due now, enqueued by `received`."""
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
        "expire_at": now + retention,
    }
