"""The context a handler receives: the event, its transaction, and reads through it."""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import firestore

from stripe_ledger.config import Settings
from stripe_ledger.firestore_client import (
    Snapshot,
    buffer_replacement,
    buffered_paths,
    fields_of,
    get_documents,
    read_through,
    translated,
)
from stripe_ledger.logs import log

if TYPE_CHECKING:
    import stripe

    from stripe_ledger.verify import VerifiedEvent

__all__ = [
    "Edits",
    "HandlerContext",
    "NotDeclared",
    "ReadAfterWrite",
    "SettleFromApi",
    "Tasks",
    "is_edit_conflict",
    "read_declared",
    "settling_conflicts",
]

_READ_ROUNDS = 3
R = TypeVar("R")
_MAX_PAUSE_SECONDS = 0.5


class Tasks(Protocol):
    """Where `ctx.enqueue` puts a task: the outbox's batch for this transaction."""

    def add(
        self, task: str, payload: Mapping[str, Any] | None = None, *, key: str | None = None
    ) -> str: ...


class ReadAfterWrite(RuntimeError):
    """A handler read a document that an earlier handler already wrote in this transaction."""


class NotDeclared(RuntimeError):
    """A handler edited a document that no `reads=` declared, so it was not read before the
    transaction's first write (Firestore allows no read after one)."""


class SettleFromApi(Exception):
    """Raised by a handler when the events alone cannot order two states of one object (two
    different states within one second): the pipeline rolls the transaction back, reads the
    object from Stripe's API (outside any transaction) and runs the event again carrying
    the state it read. Never recorded as a failure."""

    def __init__(self, object_type: str, object_id: str, stored_event_id: str) -> None:
        super().__init__(f"same-second conflict on {object_type} {object_id}")
        self.object_type = object_type
        self.object_id = object_id
        self.stored_event_id = stored_event_id


def is_edit_conflict(error: BaseException) -> bool:
    """Whether a commit failed because an edited document's precondition failed (it changed,
    or was created, since it was read). The ledger's own writes have preconditions too: a
    caller holding claims must check them before it calls a failure an edit conflict."""
    return isinstance(error, (gexc.FailedPrecondition, gexc.AlreadyExists))


def settling_conflicts(
    work: Callable[[], R],
    *,
    budget_seconds: float,
    conflicted: Callable[[Exception], bool] = is_edit_conflict,
) -> R:
    """Run `work` (a whole transaction), and again while it fails because a document it
    edits changed meanwhile (`conflicted`), for up to `budget_seconds`; then the conflict is
    raised.

    Each conflict means another commit went through, so a burst of events racing for one
    document settles. The pauses, random up to a ceiling that doubles with each run (40 ms,
    80 ms, ... at most 0.5 s), spread the racers out so that the losers do not meet again.
    (Reading a hot document through the transaction instead, to hold its lock, was measured
    worse: on the emulator such locks wait for seconds and abort.)
    """
    started = time.monotonic()
    runs = 0
    while True:
        runs += 1
        try:
            return work()
        except Exception as error:
            if not conflicted(error):
                raise
            elapsed = time.monotonic() - started
            if elapsed >= budget_seconds:
                log(
                    logging.WARNING,
                    f"gave up after {runs} runs in {elapsed:.1f} s: documents this transaction "
                    f"edits kept changing ({type(error).__name__})",
                )
                raise
        ceiling = min(_MAX_PAUSE_SECONDS, 0.02 * 2**runs)
        time.sleep(random.uniform(0, ceiling))  # noqa: S311 - jitter, not a secret


class Edits:
    """Documents that several handlers of one transaction change together (`ctx.edit`): an
    aggregate many events touch at once, like a customer's access.

    They are read without a lock (outside the transaction), so concurrent events for one
    customer never wait on each other; each is written once, when the handlers are done,
    only if it changed, and with a precondition that it did not change since it was read
    (or, if it did not exist, that it still does not). A failed precondition fails the whole
    commit, which is then run again (`settling_conflicts`), so no change is ever lost.
    """

    def __init__(self) -> None:
        self._read: dict[str, Snapshot] = {}
        self._documents: dict[str, tuple[firestore.DocumentReference, dict[str, Any]]] = {}

    def read(self, db: firestore.Client, refs: list[firestore.DocumentReference]) -> None:
        """Read `refs` (those not read yet) in one batch, outside any transaction."""
        missing = list({ref.path: ref for ref in refs if ref.path not in self._read}.values())
        if missing:
            with translated("read documents to edit"):
                for snapshot in get_documents(db, missing):
                    self._read[snapshot.reference.path] = snapshot

    def snapshot(self, ref: firestore.DocumentReference) -> Snapshot | None:
        """`ref` as read, or None when it was not read."""
        return self._read.get(ref.path)

    def document(self, ref: firestore.DocumentReference) -> dict[str, Any]:
        """The working copy of `ref`; raises `NotDeclared` when it was not read."""
        held = self._documents.get(ref.path)
        if held is None:
            snapshot = self._read.get(ref.path)
            if snapshot is None:
                raise NotDeclared(f"{ref.path} is edited but no edits= declared it")
            held = (ref, copy.deepcopy(dict(fields_of(snapshot))))
            self._documents[ref.path] = held
        return held[1]

    def write(self, tx: firestore.Transaction) -> list[firestore.DocumentReference]:
        """Write every working copy that differs from what was read, each with its
        precondition; return the documents written."""
        written = []
        for path, (ref, document) in self._documents.items():
            snapshot = self._read[path]
            if document == fields_of(snapshot):
                continue
            written.append(ref)
            update_time = snapshot.update_time if snapshot.exists else None
            buffer_replacement(tx, ref, document, update_time=update_time)
        return written


class HandlerContext:
    """Everything a handler may touch while its event's transaction is open.

    Writes go through `tx` and commit atomically with the ledger record. Reads go through
    `get`/`get_all`: they read inside the same transaction and are cached, and the documents
    every handler declared with `reads=` are fetched in batches before the first handler
    runs. A handler may read after earlier handlers wrote, except a document already written
    in this transaction, whether it was read before or not: the read would see its state
    before that write (and a write based on it would undo the earlier one), so `get` raises
    `ReadAfterWrite`. A document several handlers change together, or that many events
    change at once (an aggregate, like a customer's access), is declared with `edits=`, read
    without a lock and changed in place through `edit` (see `Edits`). `settings` are the
    function's.
    """

    def __init__(
        self,
        received: VerifiedEvent,
        tx: firestore.Transaction,
        db: firestore.Client,
        attempt: int,
        tasks: Tasks | None = None,
        *,
        settings: Settings | None = None,
        snapshots: dict[str, Snapshot] | None = None,
        edits: Edits | None = None,
    ) -> None:
        self.received = received
        self.tx = tx
        self.db = db
        self.attempt = attempt
        self.tasks = tasks
        self.settings = settings if settings is not None else Settings(webhook_secrets=())
        # Documents read and edited in this transaction; several contexts may share them (a
        # backfill's page is read in one batch and written in one commit).
        self._snapshots: dict[str, Snapshot] = {} if snapshots is None else snapshots
        self.edits = edits if edits is not None else Edits()

    @property
    def event(self) -> stripe.Event:
        """The verified event as a `stripe.Event`."""
        return self.received.event

    @property
    def object(self) -> dict[str, Any]:
        """`event.data.object` as a plain dict."""
        return self.received.object

    @property
    def event_id(self) -> str:
        return self.received.id

    @property
    def event_type(self) -> str:
        return self.received.type

    def enqueue(
        self, task: str, payload: Mapping[str, Any] | None = None, *, key: str | None = None
    ) -> str:
        """Enqueue a side effect, run after the commit by `task`'s executor; return its key.

        The task is created in this transaction, so it exists if and only if the event's
        effects do; its executor (`@task(name)`) runs at least once after the commit, with
        the returned idempotency key. The default key, `{event_id}:{task}:{n}` (the n-th
        enqueue of `task` by this event's handlers, from 0), is the same on every attempt; an
        explicit `key` (e.g. `receipt:{invoice_id}`) also deduplicates across events: a key
        that was enqueued before, by any event, is not enqueued again. Raises `UnknownTask`
        when no executor is registered for `task` (see docs/outbox.md).
        """
        if self.tasks is None:
            raise RuntimeError("this handler context has no outbox")
        return self.tasks.add(task, payload, key=key)

    def cached(self, ref: firestore.DocumentReference) -> Snapshot | None:
        """`ref` as already read (through the transaction, or to edit), or None: what a
        `reads=` or `edits=` function may consult to name the documents it needs next (see
        `read_declared`)."""
        return self._snapshots.get(ref.path) or self.edits.snapshot(ref)

    def edit(self, ref: firestore.DocumentReference) -> dict[str, Any]:
        """`ref`'s content (empty for a missing document) as a dict to change in place,
        shared by every handler of this transaction and written once when they are done, if
        it changed (see `Edits`). `ref` must have been declared with `edits=`; raises
        `NotDeclared`."""
        return self.edits.document(ref)

    def get(self, ref: firestore.DocumentReference) -> Snapshot:
        """Read one document through the transaction (cached for the transaction)."""
        return self.get_all([ref])[0]

    def get_all(self, refs: Iterable[firestore.DocumentReference]) -> list[Snapshot]:
        """Read documents through the transaction in one batch, skipping cached ones; raise
        `ReadAfterWrite` for a document this transaction has written. Raises
        `LedgerUnavailable` when Firestore is unavailable."""
        refs = list(refs)
        written = buffered_paths(self.tx)
        for ref in refs:
            if ref.path in written:
                raise ReadAfterWrite(
                    f"{ref.path} was already written in this transaction, so a read would see "
                    "its old state; handlers sharing a document must use transforms "
                    "(firestore.Increment, ArrayUnion) or be merged into one handler"
                )
        missing = list({ref.path: ref for ref in refs if ref.path not in self._snapshots}.values())
        if missing:
            for snapshot in read_through(self.tx, missing):
                self._snapshots[snapshot.reference.path] = snapshot
        return [self._snapshots[ref.path] for ref in refs]


def read_declared(
    ctx: HandlerContext,
    reads: Callable[[], Iterable[firestore.DocumentReference]],
    edits: Callable[[], Iterable[firestore.DocumentReference]] = lambda: (),
) -> None:
    """Read every document `reads` names through the transaction, and every one `edits`
    names without a lock, in one batch of each per round, before any write.

    Both are asked again after each round, so that a function can name the documents it
    needs after consulting one it named before (`ctx.cached`: a customer's access names its
    user); it stops when nothing new is named, after at most three rounds.
    """
    for _ in range(_READ_ROUNDS):
        to_read = [ref for ref in reads() if ctx.cached(ref) is None]
        to_edit = [ref for ref in edits() if ctx.cached(ref) is None]
        if not to_read and not to_edit:
            return
        if to_read:
            ctx.get_all(to_read)
        ctx.edits.read(ctx.db, to_edit)
