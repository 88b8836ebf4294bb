"""The context a handler receives: the event, its transaction, and reads through it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from google.cloud import firestore

from stripe_ledger.firestore_client import buffered_paths, read_through
from stripe_ledger.ledger import Snapshot

if TYPE_CHECKING:
    import stripe

    from stripe_ledger.verify import VerifiedEvent

__all__ = ["HandlerContext", "ReadAfterWrite", "SettleFromApi", "Tasks"]


class Tasks(Protocol):
    """Where `ctx.enqueue` puts a task: the outbox's batch for this transaction."""

    def add(
        self, task: str, payload: Mapping[str, Any] | None = None, *, key: str | None = None
    ) -> str: ...


class ReadAfterWrite(RuntimeError):
    """A handler read a document that an earlier handler already wrote in this transaction."""


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


class HandlerContext:
    """Everything a handler may touch while its event's transaction is open.

    Writes go through `tx` and commit atomically with the ledger record. Reads go through
    `get`/`get_all`: they read inside the same transaction and are cached, and the documents
    every handler declared with `reads=` are fetched in one batch before the first handler
    runs. A handler may read after earlier handlers wrote, except a document already written
    in this transaction, whether it was read before or not: the read would see its state
    before that write (and a write based on it would undo the earlier one), so `get` raises
    `ReadAfterWrite`.
    """

    def __init__(
        self,
        received: VerifiedEvent,
        tx: firestore.Transaction,
        db: firestore.Client,
        attempt: int,
        tasks: Tasks | None = None,
        *,
        snapshots: dict[str, Snapshot] | None = None,
    ) -> None:
        self.received = received
        self.tx = tx
        self.db = db
        self.attempt = attempt
        self.tasks = tasks
        # Documents read in this transaction; several contexts may share one (a backfill's
        # page is read in one batch).
        self._snapshots: dict[str, Snapshot] = {} if snapshots is None else snapshots

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
