"""Read-only queries on the ledger for operators: list, show and count events.

Every query fits one of the composite indexes the deployment declares, `(status, received_at
DESC)`, `(type, received_at DESC)` and `(status, type, received_at DESC)`, or the automatic
single-field index on `received_at`: equality on `status` and/or `type`, a range on
`received_at` only, newest first. Pages are read with cursors (`start_after` the last
document read), so a page costs the same at the end of a ledger of 100,000 events as at its
start, and only the fields a listing shows are fetched, never the stored payloads.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from stripe_ledger.ledger import EventLedger, Snapshot, Status, utc_now
from stripe_ledger.operation_errors import UsageError

__all__ = [
    "LIST_FIELDS",
    "UNFINISHED",
    "Page",
    "Progress",
    "Stats",
    "event_query",
    "get_record",
    "list_events",
    "parse_since",
    "plain_record",
    "scan",
    "stats",
]

Progress = Callable[[int], None]
"""Told how many more items were done; the CLI draws a progress bar from it."""

LIST_FIELDS = ("type", "status", "attempts", "received_at", "last_error", "replays")
"""The record fields a listing reads (a projection: payloads are never fetched)."""

UNFINISHED = frozenset({Status.PROCESSING, Status.FAILED, Status.DEAD})
"""Statuses whose event's effects have not been applied."""

_PAGE_SIZE = 500
_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`30m`, `12h`, `3d`, `2w` ago, or an ISO 8601 date or time (UTC unless it says)."""
    now = now or utc_now()
    value = text.strip()
    duration = _DURATION.match(value.lower())
    if duration:
        amount, unit = int(duration.group(1)), duration.group(2)
        return now - timedelta(**{_UNITS[unit]: amount})
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {text!r} is neither a duration (30m, 12h, 3d, 2w) nor an ISO 8601 time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment > now:
        raise UsageError(f"--since {text!r} is in the future")
    return moment


def event_query(
    ledger: EventLedger,
    *,
    status: str | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
) -> firestore.Query:
    """Records matching the filters, newest first (fits the declared indexes)."""
    query: firestore.Query = ledger.collection  # type: ignore[assignment]
    if status is not None:
        query = query.where(filter=FieldFilter("status", "==", status))
    if event_type is not None:
        query = query.where(filter=FieldFilter("type", "==", event_type))
    if since is not None:
        query = query.where(filter=FieldFilter("received_at", ">=", since))
    return query.order_by("received_at", direction=firestore.Query.DESCENDING)


def scan(
    query: firestore.Query,
    *,
    limit: int | None = None,
    after: Snapshot | None = None,
    page_size: int = _PAGE_SIZE,
) -> Iterator[Snapshot]:
    """The documents of `query`, read page by page with cursors (each RPC stays short)."""
    remaining = limit
    cursor = after
    while remaining is None or remaining > 0:
        size = page_size if remaining is None else min(page_size, remaining)
        page = query.start_after(cursor) if cursor is not None else query
        snapshots = list(page.limit(size).stream())
        yield from snapshots
        if len(snapshots) < size:
            return
        cursor = snapshots[-1]
        if remaining is not None:
            remaining -= len(snapshots)


@dataclass(frozen=True)
class Page:
    """One page of a listing, and the event ID to continue after (None at the end)."""

    records: list[dict[str, Any]]
    next_after: str | None


def list_events(
    ledger: EventLedger,
    *,
    status: str | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
    after: str | None = None,
) -> Page:
    """Up to `limit` records, newest first, starting after the event ID `after`."""
    cursor = None
    if after is not None:
        cursor = ledger.ref(after).get()
        if not cursor.exists:
            raise UsageError(f"--after {after}: no such event in the ledger")
    query = event_query(ledger, status=status, event_type=event_type, since=since)
    snapshots = list(scan(query.select(LIST_FIELDS), limit=limit + 1, after=cursor))
    records = [plain_record(snapshot) for snapshot in snapshots[:limit]]
    next_after = records[-1]["id"] if len(snapshots) > limit else None
    return Page(records, next_after)


def get_record(ledger: EventLedger, event_id: str) -> dict[str, Any] | None:
    """The whole record of `event_id` (payload included), or None."""
    snapshot = ledger.ref(event_id).get()
    return snapshot.to_dict() if snapshot.exists else None


def plain_record(snapshot: Snapshot, record: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A record as plain values for display: `id` first, no stored payload fields."""
    if record is None:
        record = snapshot.to_dict() or {}
    plain: dict[str, Any] = {"id": snapshot.id}
    for key in sorted(record):
        if key not in ("payload", "payload_zlib"):
            plain[key] = record[key]
    return plain


@dataclass
class Stats:
    """Counts by status and type in a window, the failure rate, the oldest unfinished."""

    since: datetime | None
    total: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_type: dict[str, Counter[str]] = field(default_factory=dict)
    oldest_unfinished: dict[str, Any] | None = None

    @property
    def failure_rate(self) -> float | None:
        """failed + dead over completed + failed + dead (ignored and in-flight left out)."""
        failures = self.by_status[Status.FAILED] + self.by_status[Status.DEAD]
        decided = failures + self.by_status[Status.COMPLETED]
        return round(failures / decided, 4) if decided else None

    def add(self, snapshot: Snapshot) -> None:
        record = snapshot.to_dict() or {}
        status, event_type = str(record.get("status")), str(record.get("type"))
        self.total += 1
        self.by_status[status] += 1
        self.by_type.setdefault(event_type, Counter())[status] += 1
        received = record.get("received_at")
        if status in UNFINISHED and received is not None:
            oldest = self.oldest_unfinished
            if oldest is None or received <= oldest["received_at"]:
                self.oldest_unfinished = {
                    "id": snapshot.id,
                    "type": event_type,
                    "status": status,
                    "received_at": received,
                }


def stats(
    ledger: EventLedger, *, since: datetime | None = None, progress: Progress | None = None
) -> Stats:
    """Count the records received since `since` (all of them if None) in one projected scan."""
    result = Stats(since)
    query = event_query(ledger, since=since).select(["type", "status", "received_at"])
    for snapshot in scan(query, page_size=1000):
        result.add(snapshot)
        if progress is not None:
            progress(1)
    return result
