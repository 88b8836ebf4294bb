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
unchanged means it has not, and the write is sent once more with the same token, since
Firestore may still apply the first one after the read. So a lost answer never leaves a claim
that nobody knows it holds, and an attempt that never ran is never counted, unless two writes
in a row go unanswered and one of them lands late (then its lease is taken over, as after a
crash).
"""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from stripe_ledger.errors import LedgerUnavailable
from stripe_ledger.firestore_client import Snapshot, create_document, fields_of, translated

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
    record: Mapping[str, Any], *, running: str, max_attempts: int, now: datetime, attempt_word: str
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
    return _write(
        lambda: create_document(ref, document),
        ref,
        token,
        read_back,
        before=None,
        # Also what a retry of our own create answers when the first attempt had landed.
        refused=gexc.AlreadyExists,
        what="create",
    )


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
    return _write(
        lambda: ref.update(fields, option=option).update_time,
        ref,
        token,
        read_back,
        before=update_time,
        refused=gexc.FailedPrecondition,
        what="compare-and-set",
    )


def _write(
    send: Callable[[], datetime],
    ref: firestore.DocumentReference,
    token: str,
    read_back: float,
    *,
    before: datetime | None,
    refused: type[Exception],
    what: str,
) -> Written:
    """Send a write of `ref` carrying `token` (its update time, or raises `refused` when its
    precondition fails), and learn whether it landed.

    A write left unanswered that the read-back shows did not land is sent once more, the same
    token and precondition: Firestore may still apply the first one after the read (a
    freshly started emulator was seen doing it), and whichever of the two lands first, the
    other is refused by the precondition and the read-back then finds our token. Only a
    second unanswered write raises: then a late one leaves a lease that a later delivery takes
    over, as after a crash.
    """
    for _ in range(2):
        answered = True
        try:
            with translated(what):
                return Written(send())  # pragma: SYNCPOINT ledger
        except refused:
            pass
        except LedgerUnavailable:
            answered = False
        written = _read_back(ref, token, read_back, before=before, answered=answered)
        if written is not None:
            return written
    raise LedgerUnavailable("Firestore unavailable: a write was not answered and did not land")


def _read_back(
    ref: firestore.DocumentReference,
    token: str,
    seconds: float,
    *,
    before: datetime | None,
    answered: bool,
) -> Written | None:
    """After a refused or unanswered write carrying `token`: read the document back.

    Our token there: the write landed (what was refused was the client's retry of it). Else,
    a refusal (`answered`) means another claimant changed the document; no answer, with the
    document as it was before (missing, or still at `before`), means the write has not landed
    (None); a document changed since is someone else's. The read is bounded by `seconds`, a
    fraction of a call's bound: when Firestore is cut off it fails too, and a delivery's answer
    must stay within its documented bound.
    """
    try:
        with translated("read back an unanswered write"):
            snapshot: Snapshot = ref.get(retry=None, timeout=seconds)  # pragma: SYNCPOINT ledger
    except LedgerUnavailable:
        if answered:
            return Written(None)
        raise
    if snapshot.exists and fields_of(snapshot).get(TOKEN_FIELD) == token:
        return Written(snapshot.update_time)
    unchanged = not snapshot.exists if before is None else snapshot.update_time == before
    if not answered and unchanged:
        return None
    return Written(None, snapshot)
