"""Leases: the claim on one document (an event's record, an outbox task), written once for both.

A document in the `running` status (`processing` for events) is held by the delivery or run
that wrote it until `lease_expires_at`; a live lease refuses every other claimant, an expired
one is taken over, the unfinished attempt counting as one, and taking over the last allowed
attempt dead-letters the document instead (`judge`). Every claim and every later write of the
holder is a compare-and-set on the `update_time` its own claim left, so a holder whose lease
was taken over can never overwrite the new holder's result. The lease only decides *when* an
abandoned claim may be taken over; exactly-once never depends on clocks.

Each write here carries a fresh `lease_token`. When the answer to a write is lost (the call
timed out or the connection dropped after Firestore applied it), the document is read back:
our token there means the write landed, and the caller holds what it wrote; the document
unchanged means it did not, and nothing is held. So a lost answer never leaves a claim that
nobody knows it holds, and an attempt that never ran is never counted.
"""

from __future__ import annotations

import enum
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from stripe_ledger.errors import LedgerUnavailable
from stripe_ledger.firestore_client import Snapshot, create_document, translated

__all__ = [
    "TOKEN_FIELD",
    "Judgement",
    "Verdict",
    "Written",
    "compare_and_set",
    "create",
    "held",
    "judge",
]

TOKEN_FIELD = "lease_token"  # noqa: S105 - a field name, not a secret


class Verdict(enum.Enum):
    """What a claimant may do with a document, judged from its status and lease."""

    FREE = "free"  # not running: claimable if its status allows
    LIVE = "live"  # held by a live lease: refuse, retry later
    ABANDONED = "abandoned"  # its lease expired: take it over, the lost attempt counted
    EXHAUSTED = "exhausted"  # abandoned on its last allowed attempt: dead-letter it


@dataclass(frozen=True)
class Judgement:
    """A `Verdict`, with the seconds until a live lease ends and why an abandoned one was."""

    verdict: Verdict
    attempts: int
    wait_seconds: int = 0
    abandoned: str | None = None


def judge(
    record: dict[str, Any], *, running: str, max_attempts: int, now: datetime, attempt_word: str
) -> Judgement:
    """Judge `record` (a document with `status`, `attempts` and `lease_expires_at`)."""
    attempts = int(record.get("attempts") or 0)
    if record.get("status") != running:
        return Judgement(Verdict.FREE, attempts)
    lease = record.get("lease_expires_at")
    if lease is not None and lease > now:
        wait = max(1, math.ceil((lease - now).total_seconds()))
        return Judgement(Verdict.LIVE, attempts, wait_seconds=wait)
    abandoned = f"{attempt_word} {attempts} did not finish within its lease (crash or timeout)"
    verdict = Verdict.EXHAUSTED if attempts >= max_attempts else Verdict.ABANDONED
    return Judgement(verdict, attempts, abandoned=abandoned)


def held(now: datetime, lease_seconds: int) -> datetime:
    """When a lease taken `now` ends."""
    return now + timedelta(seconds=lease_seconds)


@dataclass(frozen=True)
class Written:
    """The result of a lease write: its `update_time` when it landed (the caller holds what it
    wrote), else the document as read back (`current`: someone else's, or missing)."""

    update_time: datetime | None
    current: Snapshot | None = None


def create(
    ref: firestore.DocumentReference, document: dict[str, Any], *, read_back: float
) -> Written:
    """Create `ref` with `document`, unless it exists (someone else's: `current` holds it).

    Raises `LedgerUnavailable` when Firestore is unavailable and the create did not land (or
    could not be read back within `read_back` seconds).
    """
    token = uuid.uuid4().hex
    document = {**document, TOKEN_FIELD: token}
    try:
        with translated("create"):
            created = create_document(ref, document)  # pragma: SYNCPOINT ledger
    except gexc.AlreadyExists:
        # Also what a retry of our own create answers when the first attempt had landed.
        return _read_back(ref, token, read_back, before=None, answered=True)
    except LedgerUnavailable:
        return _read_back(ref, token, read_back, before=None, answered=False)
    return Written(created)


def compare_and_set(
    db: firestore.Client,
    ref: firestore.DocumentReference,
    update_time: datetime,
    fields: dict[str, Any],
    *,
    read_back: float,
) -> Written:
    """Update `ref` with `fields` unless it changed since `update_time` (then `current` holds
    it as it is now, another claimant's).

    Raises `LedgerUnavailable` when Firestore is unavailable and the write did not land (or
    could not be read back within `read_back` seconds).
    """
    token = uuid.uuid4().hex
    fields = {**fields, TOKEN_FIELD: token}
    option = db.write_option(last_update_time=update_time)
    try:
        with translated("compare-and-set"):
            result = ref.update(fields, option=option)  # pragma: SYNCPOINT ledger
    except gexc.FailedPrecondition:
        return _read_back(ref, token, read_back, before=update_time, answered=True)
    except LedgerUnavailable:
        return _read_back(ref, token, read_back, before=update_time, answered=False)
    return Written(result.update_time)


def _read_back(
    ref: firestore.DocumentReference,
    token: str,
    seconds: float,
    *,
    before: datetime | None,
    answered: bool,
) -> Written:
    """After a refused or unanswered write carrying `token`: read the document back.

    Our token there: the write landed (what was refused was the client's retry of it). Else,
    a refusal (`answered`) means another claimant changed the document; no answer, with the
    document as it was before (missing, or still at `before`), means the write did not land
    and Firestore is unavailable; a document changed since is someone else's. The read is
    bounded by `seconds`, a fraction of a call's bound: when Firestore is cut off it fails
    too, and a delivery's answer must stay within its documented bound.
    """
    try:
        with translated("read back an unanswered write"):
            snapshot: Snapshot = ref.get(retry=None, timeout=seconds)  # pragma: SYNCPOINT ledger
    except LedgerUnavailable:
        if answered:
            return Written(None)
        raise
    if snapshot.exists and (snapshot.to_dict() or {}).get(TOKEN_FIELD) == token:
        return Written(snapshot.update_time)
    unchanged = not snapshot.exists if before is None else snapshot.update_time == before
    if not answered and unchanged:
        raise LedgerUnavailable("Firestore unavailable: a write was not answered and did not land")
    return Written(None, snapshot)
