"""The event ledger: `stripe_events/{event_id}` is both the claim on an event and its record.

A delivery first *claims* the event: it creates the record (status `processing`, with a
lease) or, for a record that failed or whose lease expired, takes it over with a
compare-and-set on the record's `update_time`. Only the claim's holder opens a transaction,
so concurrent duplicates never wait on each other's locks: they see the claim and are told to
retry. Every later write of the holder (completion inside the transaction, failure after it)
carries the claim's `update_time` as a precondition, so a delivery whose lease was taken over
can never overwrite what the new holder committed. The lease only decides *when* an
abandoned claim may be taken over; exactly-once never depends on clocks. The lease rules and
the writes that recognise a lost answer are `stripe_ledger.lease`'s, shared with the outbox;
every Firestore error that means "unavailable" leaves here as `LedgerUnavailable`.

A first delivery whose handlers take no lock (they read nothing through the transaction, as
projections do) can be claimed *deferred*: nothing is written before its handlers run, and
its commit creates the record, `completed`, on condition that it does not exist. Concurrent
duplicates then all run their handlers and one commit wins; the others find the record and
are judged from it. A failure creates the record too. It saves a write and a round trip per
event; what it gives up is the lease of the first attempt: a delivery killed before its
commit leaves no record, and that attempt is never counted (every redelivery older than
`redelivery_age_seconds` is claimed first, so a crash loop is still dead-lettered).
"""

from __future__ import annotations

import enum
import uuid
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore

from stripe_ledger import lease
from stripe_ledger.config import Settings
from stripe_ledger.firestore_client import (
    Snapshot,
    buffer_replacement,
    buffer_update,
    fields_of,
    get_documents,
    translated,
)
from stripe_ledger.outcomes import Outcome
from stripe_ledger.verify import VerifiedEvent

__all__ = [
    "RETRYABLE",
    "SETTLED",
    "Claim",
    "Clock",
    "EventLedger",
    "Preempted",
    "Settled",
    "Status",
    "stored_payload",
    "utc_now",
]

Clock = Callable[[], datetime]
_MAX_ERROR_CHARS = 1000
# Firestore stores at most 1 MiB per document; bigger bodies are kept compressed.
_MAX_PLAIN_PAYLOAD_BYTES = 900_000


def utc_now() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


class Status(enum.StrEnum):
    """The `status` field of a ledger record."""

    PROCESSING = "processing"
    COMPLETED = "completed"
    IGNORED = "ignored"
    FAILED = "failed"
    DEAD = "dead"


SETTLED = frozenset({Status.COMPLETED, Status.IGNORED, Status.DEAD})
"""Statuses a live delivery never touches again."""

RETRYABLE = frozenset({Status.FAILED})
"""Statuses a live delivery claims again (an expired `processing` lease always is)."""


@dataclass(frozen=True)
class Claim:
    """The right to process an event, held until the record's `update_time` changes.

    A *deferred* claim (`update_time` None) is a first delivery's that nothing was written
    for yet: it holds while the record does not exist, and `record` is what its completion
    (or its failure) creates.
    """

    event_id: str
    attempt: int
    update_time: datetime | None
    record: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def deferred(self) -> bool:
        """Whether nothing was written for this claim yet (its commit creates the record)."""
        return self.update_time is None


class Preempted(Exception):
    """A deferred claim found its record created by another delivery (`snapshot`): the event
    is to be judged from it, as a claim judges an existing record."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__(snapshot.id)
        self.snapshot = snapshot


@dataclass(frozen=True)
class Settled:
    """A claim that found nothing to process, and why."""

    outcome: Outcome
    status: str | None = None
    attempt: int | None = None
    retry_after: int | None = None
    error: str | None = None


class EventLedger:
    """Reads and writes ledger records in one Firestore collection."""

    def __init__(self, db: firestore.Client, settings: Settings, clock: Clock = utc_now) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.collection = db.collection(settings.events_collection)

    def ref(self, event_id: str) -> firestore.DocumentReference:
        """The record of `event_id`."""
        return self.collection.document(event_id)

    def claim(
        self,
        received: VerifiedEvent,
        *,
        handled: bool,
        reclaim: Collection[str] = RETRYABLE,
        note: str | None = None,
        deferred: bool = False,
        known: Snapshot | None = None,
    ) -> Claim | Settled:
        """Claim `received` for processing, or say why not.

        A first delivery costs one write (`create`), or none when `deferred`: the claim is
        then made by the handlers' own commit, which creates the record (see the module). An
        event older than `redelivery_age_seconds` is probably a redelivery, so its record is
        read first (a duplicate of a settled event then costs a single read) and it is never
        deferred; so is one whose record was just read (`known`, not read again). An event with no
        handlers (`handled=False`) is recorded `ignored` instead of claimed. Records whose
        status is in `reclaim`, and `processing` records whose lease has expired, are taken
        over. `note`, if given, is recorded in `last_note` by the claim. Raises
        `LedgerUnavailable`.
        """
        ref = self.ref(received.id)
        now = self.clock()
        snapshot = known
        if snapshot is None and (
            now.timestamp() - received.created > self.settings.redelivery_age_seconds
        ):
            snapshot = self.read(received.id)
        if snapshot is None or not snapshot.exists:
            record = self._new_record(received, handled, now)
            if note:
                record["last_note"] = note
            if deferred and handled and snapshot is None:
                record[lease.TOKEN_FIELD] = uuid.uuid4().hex  # to recognise its commit by
                return Claim(received.id, 1, None, record)
            written = lease.create(ref, record, read_back=self.settings.read_back_seconds)
            if written.update_time is not None:
                if not handled:
                    return Settled(Outcome.IGNORED, status=Status.IGNORED)
                return Claim(received.id, 1, written.update_time)
            snapshot = written.current
            if snapshot is None or not snapshot.exists:  # deleted in between: let Stripe retry
                return Settled(Outcome.IN_FLIGHT, retry_after=1)
        return self._reclaim(snapshot, handled, reclaim, note, now)

    def _reclaim(
        self,
        snapshot: Snapshot,
        handled: bool,
        reclaim: Collection[str],
        note: str | None,
        now: datetime,
    ) -> Claim | Settled:
        record = fields_of(snapshot)
        status = record.get("status")
        judged = lease.judge(
            record,
            running=Status.PROCESSING,
            max_attempts=self.settings.max_attempts,
            now=now,
            attempt_word="attempt",
        )
        attempts = judged.attempts
        fields: dict[str, Any] = {"updated_at": now}
        if judged.verdict is lease.Verdict.LIVE:
            return Settled(
                Outcome.IN_FLIGHT, status=status, attempt=attempts, retry_after=judged.wait_seconds
            )
        if judged.verdict is lease.Verdict.EXHAUSTED:
            fields.update(status=Status.DEAD, lease_expires_at=None, last_error=judged.abandoned)
            if not self._compare_and_set(snapshot, fields):
                return Settled(Outcome.IN_FLIGHT, status=status, retry_after=1)
            return Settled(
                Outcome.DEAD, status=Status.DEAD, attempt=attempts, error=judged.abandoned
            )
        if judged.verdict is lease.Verdict.ABANDONED:
            fields["last_error"] = judged.abandoned
        elif status not in reclaim:
            return Settled(Outcome.DUPLICATE, status=status, attempt=attempts)
        if note:
            fields["last_note"] = note
        if status in SETTLED:
            # Only an operator's replay reclaims a settled event; count it where it shows.
            fields["replays"] = firestore.Increment(1)
        if not handled:
            fields.update(status=Status.IGNORED, completed_at=now, lease_expires_at=None)
            if not self._compare_and_set(snapshot, fields):
                return Settled(Outcome.IN_FLIGHT, status=status, retry_after=1)
            return Settled(Outcome.IGNORED, status=Status.IGNORED, attempt=attempts)
        fields.update(
            status=Status.PROCESSING,
            attempts=attempts + 1,
            lease_expires_at=lease.held(now, self.settings.lease_seconds),
        )
        update_time = self._compare_and_set(snapshot, fields)
        if update_time is None:
            return Settled(Outcome.IN_FLIGHT, status=status, retry_after=1)
        return Claim(snapshot.id, attempts + 1, update_time)

    def _compare_and_set(self, snapshot: Snapshot, fields: dict[str, Any]) -> datetime | None:
        """Update the record unless it changed since `snapshot`; its new update time, or None."""
        assert snapshot.update_time is not None
        return lease.compare_and_set(
            self.db,
            snapshot.reference,
            snapshot.update_time,
            fields,
            read_back=self.settings.read_back_seconds,
        ).update_time

    def _update_claimed(self, claim: Claim, fields: dict[str, Any]) -> bool:
        """Update the claimed record unless another delivery took the event over; whether it
        did. A deferred claim's record is created, and `Preempted` raised if another delivery
        created it first."""
        ref = self.ref(claim.event_id)
        read_back = self.settings.read_back_seconds
        if claim.update_time is None:  # deferred (spelled so that the type narrows)
            written = lease.create(ref, {**(claim.record or {}), **fields}, read_back=read_back)
            if written.current is not None and written.current.exists:
                raise Preempted(written.current)
        else:
            written = lease.compare_and_set(
                self.db, ref, claim.update_time, fields, read_back=read_back
            )
        return written.update_time is not None

    def complete(self, tx: firestore.Transaction, claim: Claim) -> None:
        """Mark the claimed event `completed` as part of `tx` (the handlers' transaction).

        The write is conditional on the claim, so the whole transaction fails with
        `FailedPrecondition` if another delivery took the event over meanwhile; a deferred
        claim's creates the record, and fails with `AlreadyExists` if another delivery did.
        """
        ref = self.ref(claim.event_id)
        if claim.deferred:
            buffer_replacement(tx, ref, {**(claim.record or {}), **self._completed_fields()})
            return
        buffer_update(tx, ref, self._completed_fields(), update_time=claim.update_time)

    def complete_without_handlers(self, claim: Claim, note: str) -> Outcome:
        """Mark the claimed event `completed` with `note`, outside any transaction: for an
        event whose effect another record already carries (a thin event whose snapshot twin
        was applied). Returns COMPLETED, or IN_FLIGHT if the claim was lost meanwhile."""
        fields = {**self._completed_fields(), "last_note": note}
        return Outcome.COMPLETED if self._update_claimed(claim, fields) else Outcome.IN_FLIGHT

    def _completed_fields(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "status": Status.COMPLETED,
            "updated_at": now,
            "completed_at": now,
            "lease_expires_at": None,
        }

    def record_failure(self, claim: Claim, error: str, *, counts: bool = True) -> Outcome:
        """Record that the claimed attempt failed with `error`, releasing the claim.

        A failure that `counts` on the attempt number `max_attempts` dead-letters the event.
        One that does not (Firestore or Stripe unavailable) leaves it `failed` and gives the
        attempt back, so that an outage never brings an event closer to the dead letter.
        Returns FAILED, DEAD, or IN_FLIGHT when another delivery has taken the event over
        (its result stands and nothing is written). A deferred claim's failure creates the
        record (`Preempted` if another delivery did). Raises `LedgerUnavailable`.
        """
        dead = counts and claim.attempt >= self.settings.max_attempts
        fields: dict[str, Any] = {
            "status": Status.DEAD if dead else Status.FAILED,
            "last_error": error[:_MAX_ERROR_CHARS],
            "updated_at": self.clock(),
            "lease_expires_at": None,
        }
        if not counts:
            fields["attempts"] = claim.attempt - 1
        if not self._update_claimed(claim, fields):
            return Outcome.IN_FLIGHT
        return Outcome.DEAD if dead else Outcome.FAILED

    def read(self, event_id: str) -> Snapshot:
        """The record of `event_id` as it is now (it may not exist). Raises `LedgerUnavailable`."""
        with translated("read the event's record"):
            (snapshot,) = get_documents(self.db, [self.ref(event_id)])
        return snapshot

    def holds(self, claim: Claim) -> bool:
        """Whether the record is still as `claim` left it: nobody took the event over, or,
        for a deferred claim, no record exists yet (False if its own commit created it).
        Raises `Preempted` if another delivery created a deferred claim's record, so that it
        is judged from the record just read. Raises `LedgerUnavailable`."""
        snapshot = self.read(claim.event_id)
        if claim.deferred:
            return not self._created_by(claim, snapshot)
        return bool(snapshot.exists and snapshot.update_time == claim.update_time)

    def read_back_deferred(self, claim: Claim) -> bool:
        """For deferred `claim`, whose commit failed or went unanswered: True if that commit
        created the record (it carries the claim's token), False if there is no record.
        Raises `Preempted` if another delivery created it. The read is bounded like a lost
        answer's read-back (`stripe_ledger.lease`), so that an outage is answered within its
        bound. Raises `LedgerUnavailable`."""
        with translated("read back the event's commit"):
            snapshot: Snapshot = self.ref(claim.event_id).get(
                retry=None, timeout=self.settings.read_back_seconds
            )
        return self._created_by(claim, snapshot)

    @staticmethod
    def _created_by(claim: Claim, snapshot: Snapshot) -> bool:
        """Whether deferred `claim`'s commit created the record `snapshot` shows (False: none
        exists); `Preempted` if another delivery's did."""
        assert claim.record is not None
        if not snapshot.exists:
            return False
        if fields_of(snapshot).get(lease.TOKEN_FIELD) == claim.record[lease.TOKEN_FIELD]:
            return True
        raise Preempted(snapshot)

    def _new_record(self, received: VerifiedEvent, handled: bool, now: datetime) -> dict[str, Any]:
        record: dict[str, Any] = {
            "type": received.type,
            "status": Status.PROCESSING if handled else Status.IGNORED,
            "attempts": 1 if handled else 0,
            "received_at": now,
            "updated_at": now,
            "completed_at": None if handled else now,
            "lease_expires_at": (
                now + timedelta(seconds=self.settings.lease_seconds) if handled else None
            ),
            "last_error": None,
            "livemode": received.livemode,
            "api_version": received.api_version,
            "created": datetime.fromtimestamp(received.created, UTC),
            "object_id": received.object_id,
            "account": received.account,
            "expire_at": now + timedelta(days=self.settings.retention_days),
        }
        record.update(_payload_fields(received.payload))
        return record


def _payload_fields(payload: str) -> dict[str, Any]:
    encoded = payload.encode("utf-8")
    if len(encoded) <= _MAX_PLAIN_PAYLOAD_BYTES:
        return {"payload": payload}
    return {"payload": None, "payload_zlib": zlib.compress(encoded, 9)}


def stored_payload(record: dict[str, Any]) -> str | None:
    """The body a record was created from, exactly as received (decompressed if needed)."""
    if record.get("payload") is not None:
        return str(record["payload"])
    compressed = record.get("payload_zlib")
    return zlib.decompress(compressed).decode("utf-8") if compressed is not None else None
