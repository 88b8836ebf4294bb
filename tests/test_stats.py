"""`operations.stats` from aggregation queries gives exactly what a scan of the window gave:
the same totals, counts by status and by type, failure rate and oldest unfinished event, on
a seeded ledger against the emulator, whichever way each status is counted."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud import firestore

from stripe_ledger.config import Settings
from stripe_ledger.ledger import EventLedger, Status
from stripe_ledger.operations import UNFINISHED, Stats, event_query, scan, stats
from tests.support import record_rpcs

pytestmark = pytest.mark.emulator

NOW = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
SINCE = NOW - timedelta(days=1)
TIE = NOW - timedelta(hours=20)  # two unfinished records received at the same instant


def _records() -> dict[str, dict[str, Any]]:
    """40 records in the window and 5 before it: four types, every status, a type seen
    only once and long ago, a record without a type, a tie for the oldest unfinished."""
    records: dict[str, dict[str, Any]] = {}
    types = ["invoice.paid", "charge.succeeded", "customer.updated"]
    statuses = ["completed"] * 6 + ["ignored", "failed", "dead", "processing"]
    for n in range(40):
        records[f"evt_{n:03d}"] = {
            "type": types[n % 3],
            "status": statuses[n % len(statuses)],
            "received_at": NOW - timedelta(minutes=10 * n),
        }
    for n in range(5):
        records[f"evt_old{n}"] = {
            "type": "invoice.paid",
            "status": "failed",
            "received_at": SINCE - timedelta(hours=n + 1),
        }
    records["evt_rare"] = {
        "type": "payout.paid",
        "status": "completed",
        "received_at": NOW - timedelta(hours=23),
    }
    records["evt_untyped"] = {"status": "completed", "received_at": NOW - timedelta(hours=22)}
    records["evt_tie_b"] = {"type": "charge.succeeded", "status": "dead", "received_at": TIE}
    records["evt_tie_a"] = {"type": "invoice.paid", "status": "failed", "received_at": TIE}
    return records


def _scanned(ledger: EventLedger, since: datetime | None) -> Stats:
    """What `stats` computed before: one projected scan of the window, record by record."""
    result = Stats(since)
    query = event_query(ledger, since=since).select(["type", "status", "received_at"])
    for snapshot in scan(query, page_size=1000):
        record = snapshot.to_dict() or {}
        status, event_type = str(record.get("status")), str(record.get("type"))
        result.total += 1
        result.by_status[status] += 1
        result.by_type.setdefault(event_type, Counter())[status] += 1
        received = record.get("received_at")
        if status in UNFINISHED and received is not None:
            oldest = result.oldest_unfinished
            if oldest is None or received <= oldest["received_at"]:
                result.oldest_unfinished = {
                    "id": snapshot.id,
                    "type": event_type,
                    "status": status,
                    "received_at": received,
                }
    return result


def _document(counted: Stats) -> dict[str, Any]:
    statuses = ("processing", "completed", "ignored", "failed", "dead")
    return {
        "total": counted.total,
        "by_status": {s: counted.by_status[s] for s in statuses},
        "by_type": {t: {s: n for s, n in c.items() if n} for t, c in counted.by_type.items()},
        "failure_rate": counted.failure_rate,
        "oldest_unfinished": counted.oldest_unfinished,
    }


@pytest.fixture
def ledger(db: firestore.Client) -> EventLedger:
    ledger = EventLedger(db, Settings(webhook_secrets=()))
    batch = db.batch()
    for event_id, fields in _records().items():
        batch.set(ledger.ref(event_id), fields)
    batch.commit()
    return ledger


class TestStatsFromAggregations:
    def test_exact_counts_in_the_window(self, ledger: EventLedger) -> None:
        """Counted with aggregation queries (a window too large to read; statuses of at
        most 4 records read, the others counted per type, the oldest failed reached with an
        offset), the counts of the seeded window are exact, and the oldest unfinished is the
        one with the lowest ID of a tie."""
        counted = _document(stats(ledger, since=SINCE, read_window_at_most=0, read_at_most=4))
        assert counted["total"] == 44
        assert counted["by_status"] == {
            "processing": 4,
            "completed": 26,
            "ignored": 4,
            "failed": 5,
            "dead": 5,
        }
        columns = ("completed", "ignored", "failed", "dead", "processing")
        assert counted["by_type"] == {
            "invoice.paid": dict(zip(columns, (8, 2, 2, 1, 2), strict=True)),
            "charge.succeeded": dict(zip(columns, (8, 1, 2, 2, 1), strict=True)),
            "customer.updated": dict(zip(columns, (8, 1, 1, 2, 1), strict=True)),
            "payout.paid": {"completed": 1},
            "None": {"completed": 1},
        }
        assert counted["failure_rate"] == round(10 / 36, 4)
        assert counted["oldest_unfinished"] == {
            "id": "evt_tie_a",
            "type": "invoice.paid",
            "status": "failed",
            "received_at": TIE,
        }

    @pytest.mark.parametrize(
        ("read_window_at_most", "read_at_most"),
        [(5000, 1000), (40, 1000), (40, 0), (0, 0), (2, 3)],
        ids=[
            "read-the-window",
            "read-small-statuses",
            "count-every-status",
            "list-distinct-types",
            "mixed",
        ],
    )
    @pytest.mark.parametrize("window", ["1d", "all"])
    def test_same_output_as_a_scan(
        self, ledger: EventLedger, read_window_at_most: int, read_at_most: int, window: str
    ) -> None:
        """Reading the window, or counting it and reading or counting each status, with or
        without listing the ledger's distinct types, the result is the one the full scan gave
        (all time too)."""
        since = SINCE if window == "1d" else None
        counted = stats(
            ledger, since=since, read_window_at_most=read_window_at_most, read_at_most=read_at_most
        )
        assert _document(counted) == _document(_scanned(ledger, since))

    def test_a_large_window_is_counted_not_read(self, ledger: EventLedger) -> None:
        """A window over `read_window_at_most` records is not read: the counts come from
        aggregation queries, and no query asks for more documents than its bound (the
        sample of the window, a small status, or one for a distinct type or the oldest)."""
        recorder = record_rpcs(ledger.db)
        counted = stats(ledger, since=SINCE, read_window_at_most=10, read_at_most=4)
        assert counted.total == 44
        methods = Counter(method for method, _ in recorder.requests)
        assert methods["RunAggregationQuery"] >= len(Status)  # one count per status at least
        limits = [
            request.structured_query.limit.value
            for method, request in recorder.requests
            if method == "RunQuery"
        ]
        assert limits
        assert all(0 < limit <= 11 for limit in limits), limits

    def test_an_empty_window(self, ledger: EventLedger) -> None:
        """Nothing received since then: zero counts, no rate, no oldest."""
        counted = stats(ledger, since=NOW + timedelta(seconds=1))
        assert _document(counted) == _document(Stats(None))
