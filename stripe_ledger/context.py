"""The context a handler receives: the event, its transaction, and reads through it."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from google.cloud import firestore

from stripe_ledger.config import Settings
from stripe_ledger.firestore_client import buffered_paths, read_through
from stripe_ledger.ledger import Snapshot

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
    "read_declared",
]

_READ_ROUNDS = 3


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


class Edits:
    """Documents that several handlers of one transaction change together (`ctx.edit`),
    each written once, when the handlers are done, and only if it changed."""

    def __init__(self) -> None:
        self._documents: dict[str, tuple[firestore.DocumentReference, Any, dict[str, Any]]] = {}

    def document(
        self, ref: firestore.DocumentReference, snapshot: Snapshot | None
    ) -> dict[str, Any]:
        """The working copy of `ref`, from `snapshot` (its state in the transaction) the
        first time."""
        held = self._documents.get(ref.path)
        if held is None:
            stored = snapshot.to_dict() if snapshot is not None else None
            held = (ref, stored, copy.deepcopy(stored) if stored is not None else {})
            self._documents[ref.path] = held
        return held[2]

    def write(self, tx: firestore.Transaction) -> None:
        """Write every working copy that differs from what was stored."""
        for ref, stored, document in self._documents.values():
            if document != (stored or {}):
                tx.set(ref, document)


class HandlerContext:
    """Everything a handler may touch while its event's transaction is open.

    Writes go through `tx` and commit atomically with the ledger record. Reads go through
    `get`/`get_all`: they read inside the same transaction and are cached, and the documents
    every handler declared with `reads=` are fetched in batches before the first handler
    runs. A handler may read after earlier handlers wrote, except a document already written
    in this transaction, whether it was read before or not: the read would see its state
    before that write (and a write based on it would undo the earlier one), so `get` raises
    `ReadAfterWrite`. A document several handlers change together (an aggregate, like a
    user's access) is changed in place through `edit` and written once at the end.
    `settings` are the function's.
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
        """`ref` as already read in this transaction, or None: what a `reads=` function may
        consult to name the documents it needs next (see `read_declared`)."""
        return self._snapshots.get(ref.path)

    def edit(self, ref: firestore.DocumentReference) -> dict[str, Any]:
        """`ref`'s content (empty for a missing document) as a dict to change in place,
        shared by every handler of this transaction and written once when they are done, if
        it changed. `ref` must have been declared with `reads=`; raises `NotDeclared`."""
        snapshot = self.cached(ref)
        if snapshot is None:
            raise NotDeclared(f"{ref.path} is edited but no reads= declared it")
        return self.edits.document(ref, snapshot)

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
    ctx: HandlerContext, declare: Callable[[], Iterable[firestore.DocumentReference]]
) -> None:
    """Read every document `declare` names, in one batch per round, before any write.

    `declare` is asked again after each batch, so that a `reads=` function can name the
    documents it needs after consulting one it named before (`ctx.cached`: a customer's
    access names its user); it stops when nothing new is named, after at most three
    rounds.
    """
    for _ in range(_READ_ROUNDS):
        missing = [ref for ref in declare() if ctx.cached(ref) is None]
        if not missing:
            return
        ctx.get_all(missing)
