"""Read-only queries on the ledger for operators: list, show and count events.

Every query fits one of the composite indexes the deployment declares, `(status, received_at
DESC)`, `(type, received_at DESC)` and `(status, type, received_at DESC)`, or the automatic
single-field index on `received_at`: equality on `status` and/or `type`, a range on
`received_at` only, newest first. Pages are read with cursors (`start_after` the last
document read), so a page costs the same at the end of a ledger of 100,000 events as at its
start, and only the fields a listing shows are fetched, never the stored payloads. `stats`
counts with aggregation queries on the same indexes instead of reading the window.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.aggregation import AggregationQuery
from google.cloud.firestore_v1.base_query import FieldFilter

from stripe_ledger.firestore_client import Snapshot
from stripe_ledger.ledger import EventLedger, Status, utc_now
from stripe_ledger.operation_errors import UsageError

__all__ = [
    "LIST_FIELDS",
    "READ_AT_MOST",
    "READ_WINDOW_AT_MOST",
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
        # The cursor needs only the ordered field: never fetch its payload.
        cursor = ledger.ref(after).get(field_paths=["received_at"])
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

    def tally(self, snapshot: Snapshot) -> None:
        """Count one record read (its `type`, `status` and `received_at`)."""
        status = str((snapshot.to_dict() or {}).get("status"))
        self.total += 1
        self.by_status[status] += 1
        self.attribute(snapshot, status)

    def attribute(self, snapshot: Snapshot, status: str) -> None:
        """Count a record read under its type (its `status` is counted already), and keep
        it if it is the oldest unfinished."""
        self.add_count(_type_of(snapshot), status, 1)
        if status in UNFINISHED:
            self.consider_oldest(snapshot)

    def add_count(self, event_type: str, status: str, count: int) -> None:
        if count:
            self.by_type.setdefault(event_type, Counter())[status] += count

    def consider_oldest(self, snapshot: Snapshot) -> None:
        """Keep `snapshot` if it is the oldest unfinished record so far (ties: lowest ID, the
        one a newest-first scan reaches last)."""
        record = snapshot.to_dict() or {}
        received = record.get("received_at")
        oldest = self.oldest_unfinished
        if received is None or (
            oldest is not None and (received, snapshot.id) >= (oldest["received_at"], oldest["id"])
        ):
            return
        self.oldest_unfinished = {
            "id": snapshot.id,
            "type": str(record.get("type")),
            "status": str(record.get("status")),
            "received_at": received,
        }


READ_WINDOW_AT_MOST = 5000
"""A window with at most this many records is read whole (three fields each): one query.
A larger one is counted with aggregation queries."""

READ_AT_MOST = 1000
"""In a larger window, a status with at most this many records is read (three fields each);
one with more is counted per type with aggregation queries."""

_WORKERS = 8
_STATS_FIELDS = ["type", "status", "received_at"]


def stats(
    ledger: EventLedger,
    *,
    since: datetime | None = None,
    progress: Progress | None = None,
    read_window_at_most: int = READ_WINDOW_AT_MOST,
    read_at_most: int = READ_AT_MOST,
) -> Stats:
    """Count the records received since `since` (all of them if None), all in one read-only
    transaction so that the counts add up.

    1. The newest `read_window_at_most` + 1 records of the window are read with a
       projection. If that is the whole window, they are counted: done.
    2. Otherwise aggregation queries count: one count per status.
    3. A status with at most `read_at_most` records (failed, dead, ignored, in flight, as a
       rule) is read with a projection: its counts by type and its oldest record come with it.
    4. A larger status is counted per type. The types are those seen so far (step 1 read a
       sample of the window); when their counts do not add up to the status's count, the
       ledger's distinct types are listed (one single-document query per type) and the rest
       counted. Records without a type count as type "None", as a scan reports them.
    5. The oldest record of a large unfinished status is the last of its newest-first query,
       skipped to with an offset.
    """
    result = Stats(since)

    def window(status: str | None = None, event_type: str | None = None) -> firestore.Query:
        return event_query(ledger, status=status, event_type=event_type, since=since)

    @firestore.transactional
    def read(transaction: firestore.Transaction) -> Stats:
        def count(query: firestore.Query) -> int:
            # Typed as a flat list of results; it holds one list of results per row.
            rows: Any = AggregationQuery(query).count().get(transaction=transaction)
            return int(rows[0][0].value)  # int(): the emulator answers 0.0 for nothing

        def documents(query: firestore.Query) -> list[Snapshot]:
            return list(query.stream(transaction=transaction))

        sample = documents(window().select(_STATS_FIELDS).limit(read_window_at_most + 1))
        if len(sample) <= read_window_at_most:
            for snapshot in sample:
                result.tally(snapshot)
            if progress is not None and sample:
                progress(len(sample))
            return result
        with ThreadPoolExecutor(_WORKERS) as pool:
            statuses = [str(s) for s in Status]
            for status, counted in zip(
                statuses, pool.map(lambda s: count(window(s)), statuses), strict=True
            ):
                result.by_status[status] = counted
                result.total += counted
                if progress is not None and counted:
                    progress(counted)
            small = [s for s in statuses if 0 < result.by_status[s] <= read_at_most]
            large = [s for s in statuses if result.by_status[s] > read_at_most]
            reads = pool.map(
                lambda s: documents(window(s).select(_STATS_FIELDS).limit(read_at_most)), small
            )
            for status, snapshots in zip(small, reads, strict=True):
                for snapshot in snapshots:
                    result.attribute(snapshot, status)
            if not large:
                return result
            known = {_type_of(s) for s in sample} | set(result.by_type)
            known.discard("None")  # a missing type is what the counts leave over, not a value
            for status in large:
                _count_by_type(result, status, sorted(known), window, count, pool)
            unlisted = [s for s in large if _leftover(result, s)]
            if unlisted:
                listed = _distinct_types(ledger, documents)
                more = sorted(set(listed) - known - {"None"})
                for status in unlisted:
                    _count_by_type(result, status, more, window, count, pool)
            for status in large:
                if (left := _leftover(result, status)) > 0:
                    result.add_count("None", status, left)
            oldest = pool.map(
                lambda s: documents(
                    window(s).select(_STATS_FIELDS).offset(result.by_status[s] - 1).limit(1)
                ),
                [s for s in large if s in UNFINISHED],
            )
            for snapshots in oldest:
                for snapshot in snapshots:
                    result.consider_oldest(snapshot)
        return result

    counted: Stats = read(ledger.db.transaction(read_only=True))
    return counted


def _count_by_type(
    result: Stats,
    status: str,
    types: list[str],
    window: Callable[[str | None, str | None], firestore.Query],
    count: Callable[[firestore.Query], int],
    pool: ThreadPoolExecutor,
) -> None:
    counts = pool.map(lambda t: count(window(status, t)), types)
    for event_type, counted in zip(types, counts, strict=True):
        result.add_count(event_type, status, counted)


def _type_of(snapshot: Snapshot) -> str:
    return str((snapshot.to_dict() or {}).get("type"))  # "None" when missing, as a scan says


def _leftover(result: Stats, status: str) -> int:
    """The status's records in the window not yet attributed to a type."""
    return result.by_status[status] - sum(c[status] for c in result.by_type.values())


def _distinct_types(
    ledger: EventLedger, documents: Callable[[firestore.Query], list[Snapshot]]
) -> list[str]:
    """Every distinct `type` in the ledger, one single-document query each (a skip scan of
    the automatic single-field index on `type`), whatever the number of records."""
    query = ledger.collection.order_by("type").select(["type"]).limit(1)
    types: list[str] = []
    while True:
        page = query.start_after({"type": types[-1]}) if types else query
        found = documents(page)
        if not found:
            return [str(t) for t in types]
        types.append(found[0].get("type"))
