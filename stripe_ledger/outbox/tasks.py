"""The outbox's model: a task's status, what an executor receives, what a run did, and the
task's key (its idempotency key and document ID)."""

from __future__ import annotations

import enum
import hashlib
import logging
import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from stripe_ledger import logs

if TYPE_CHECKING:
    from google.cloud import firestore

__all__ = [
    "LIST_FIELDS",
    "MAX_KEY_LENGTH",
    "TaskPage",
    "TaskResult",
    "TaskRun",
    "TaskStatus",
    "UnknownTask",
    "check_key",
    "describe",
    "logged",
    "retry_delay",
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
    db: firestore.Client | None = field(default=None, compare=False, repr=False)
    """The function's Firestore client, for an executor that reads what it mirrors."""

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


_LEVELS = {
    "done": logging.INFO,
    "failed": logging.WARNING,
    "lease_lost": logging.WARNING,
}


def logged(result: TaskResult) -> TaskResult:
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


def describe(error: BaseException) -> str:
    """A run's `last_error`: the exception's type and message."""
    return f"{type(error).__name__}: {error}"[:_MAX_ERROR_CHARS]
