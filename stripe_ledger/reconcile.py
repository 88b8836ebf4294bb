"""Reconcile the ledger with Stripe's Events API: process what Stripe has and the ledger lacks.

Stripe lists the events of the last 30 days. By default only those whose delivery has not
succeeded (`delivery_success=false`: pending, or failed at some endpoint) are listed; `all`
lists every event in the window. Each listed event is looked up in the ledger:

- missing, `failed`, or `processing` (a lease that may have expired): processed through
  the pipeline of live deliveries (`WebhookService.process`, refetch mode included), so a
  live redelivery arriving meanwhile still gives one effect;
- `completed` or `ignored`: left untouched;
- `dead`: reported, not processed (that is what `stripe-ledger replay` is for).

Events fetched from the API are a trusted source (the API key authenticates Stripe), so no
signature is checked; the record then stores the event as the API rendered it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from stripe_ledger.errors import (
    ConfigurationError,
    InvalidEvent,
    LedgerUnavailable,
    StripeUnavailable,
)
from stripe_ledger.firestore_client import translated
from stripe_ledger.ledger import EventLedger, Status
from stripe_ledger.operation_errors import UsageError
from stripe_ledger.operations import Progress
from stripe_ledger.service import WebhookService
from stripe_ledger.stripe_api import StripeApi
from stripe_ledger.verify import parse_event

__all__ = ["STRIPE_RETENTION", "ReconcileReport", "ReconcileResult", "check_window", "reconcile"]

STRIPE_RETENTION = timedelta(days=30)
"""How far back Stripe's Events API lists events."""

_LOOKUP_BATCH = 100
_TO_PROCESS = frozenset({None, Status.FAILED, Status.PROCESSING})


@dataclass(frozen=True)
class ReconcileResult:
    """What reconcile found for, and did to, one event Stripe listed.

    `ledger_status` is the record's status before (None: missing). `outcome` is the
    delivery outcome when the event was processed, `would_process` on a dry run, `invalid`
    or `unavailable` when it could not be, and None when it was left alone.
    """

    event_id: str
    event_type: str
    created: int
    ledger_status: str | None
    outcome: str | None = None
    attempt: int | None = None
    error: str | None = None
    duration_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome not in (
            "failed",
            "dead",
            "in_flight",
            "contended",
            "invalid",
            "unavailable",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReconcileReport:
    """The whole run: the window, what was listed, retries, and one result per event."""

    since: datetime
    all_events: bool
    dry_run: bool
    pages: int = 0
    api_retries: int = 0
    results: list[ReconcileResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)

    def counts(self) -> dict[str, dict[str, int]]:
        """How many listed events were in each ledger status, and each outcome."""
        found = Counter(result.ledger_status or "missing" for result in self.results)
        outcomes = Counter(result.outcome for result in self.results if result.outcome)
        return {"ledger_status": dict(found), "outcomes": dict(outcomes)}


def check_window(since: datetime, now: datetime) -> None:
    """Refuse a window Stripe cannot list in full."""
    if since < now - STRIPE_RETENTION:
        raise UsageError(
            f"--since {since.isoformat(timespec='seconds')} is more than 30 days ago; "
            "Stripe's Events API keeps events for 30 days"
        )


def reconcile(
    api: StripeApi,
    service: WebhookService,
    *,
    since: datetime,
    all_events: bool = False,
    dry_run: bool = False,
    workers: int = 4,
    listing: Progress | None = None,
    processing: Callable[[int], Progress] | None = None,
    on_result: Callable[[ReconcileResult], None] | None = None,
) -> ReconcileReport:
    """List the window's events from Stripe, then process those the ledger has not finished.

    `listing` is told of each event listed; `processing(total)` returns the progress of the
    events to process. Dry runs list and look up, and write nothing.
    """
    ledger = service.ledger
    check_window(since, ledger.clock())
    report = ReconcileReport(since, all_events, dry_run)
    events: dict[str, dict[str, Any]] = {}
    for page in api.list_events(
        created_gte=int(since.timestamp()), delivery_success=None if all_events else False
    ):
        report.pages += 1
        for event in page:
            events.setdefault(str(event["id"]), event)
        if listing is not None:
            listing(len(page))
    report.api_retries = api.retries
    # Stripe lists newest first; process oldest first, as they happened.
    ordered = sorted(events.values(), key=lambda event: int(event.get("created") or 0))
    statuses = _ledger_statuses(ledger, (str(event["id"]) for event in ordered))

    def one(event: dict[str, Any]) -> ReconcileResult:
        event_id = str(event["id"])
        status = statuses.get(event_id)
        found = ReconcileResult(
            event_id, str(event.get("type")), int(event.get("created") or 0), status
        )
        if status not in _TO_PROCESS:
            return found
        if dry_run:
            return replace(found, outcome="would_process")
        return _process(found, event, service)

    to_process = [event for event in ordered if statuses.get(str(event["id"])) in _TO_PROCESS]
    advance = processing(len(to_process)) if processing is not None else None

    def tracked(event: dict[str, Any]) -> ReconcileResult:
        result = one(event)
        if on_result is not None:
            on_result(result)
        if advance is not None and statuses.get(result.event_id) in _TO_PROCESS:
            advance(1)
        return result

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        report.results = list(pool.map(tracked, ordered))
    return report


def _process(
    found: ReconcileResult, event: dict[str, Any], service: WebhookService
) -> ReconcileResult:
    started = time.perf_counter()
    try:
        received = parse_event(json.dumps(event))
    except InvalidEvent as error:
        return replace(found, outcome="invalid", error=str(error))
    now = service.ledger.clock().isoformat(timespec="seconds")
    try:
        delivery = service.process(received, note=f"processed by stripe-ledger reconcile at {now}")
    except (LedgerUnavailable, StripeUnavailable, ConfigurationError) as error:
        return replace(found, outcome="unavailable", error=str(error))
    return replace(
        found,
        outcome=delivery.outcome.value,
        attempt=delivery.attempt,
        error=delivery.error,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )


def _ledger_statuses(ledger: EventLedger, event_ids: Iterable[str]) -> dict[str, str | None]:
    """The status of each event's record (None when there is none), read in batches."""
    ids = list(event_ids)
    statuses: dict[str, str | None] = dict.fromkeys(ids)
    for start in range(0, len(ids), _LOOKUP_BATCH):
        refs = [ledger.ref(event_id) for event_id in ids[start : start + _LOOKUP_BATCH]]
        with translated("read the ledger's statuses"):
            found = list(ledger.db.get_all(refs, field_paths=["status"]))
        for snapshot in found:
            if snapshot.exists:
                statuses[snapshot.id] = snapshot.get("status")
    return statuses
