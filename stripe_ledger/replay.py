"""Replay stored events through exactly the path a live delivery takes.

A replay parses the record's stored payload (a trusted source: its signature was verified
when it arrived, so it is not checked again), a snapshot event or a thin event notification,
and hands it to the pipeline every live delivery takes (`WebhookService.process`: thin events
fetched, refetch mode applied) with a wider `reclaim`: `failed` and `dead` records, and with
`force` also `completed` and `ignored` ones, may be claimed again. Claiming is the same
compare-and-set as for a live delivery, so a replay racing a live redelivery of the same
event still applies it once: one of them holds the claim, the other sees it in flight or
settled. A forced replay runs the
handlers again in a new transaction; the claim counts it in the record's `replays` and
`last_note` says who replayed it and when.

An event that failed in a handler is replayed only where that handler is registered: a
replay without it (STRIPE_HANDLER_MODULES not set as deployed) would complete the event with
the failed effect never applied, and Stripe would not send it again. It is refused
(`no_handler`) instead.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from stripe_ledger.errors import (
    ConfigurationError,
    InvalidEvent,
    LedgerUnavailable,
    StripeUnavailable,
)
from stripe_ledger.ledger import EventLedger, Status, stored_payload
from stripe_ledger.operations import Progress, event_query, scan
from stripe_ledger.processing import failed_handler
from stripe_ledger.service import WebhookService
from stripe_ledger.verify import parse_event

__all__ = [
    "FORCE_ONLY",
    "REPLAYABLE",
    "ReplayResult",
    "replay_event",
    "replay_events",
    "select_event_ids",
]

REPLAYABLE = frozenset({Status.FAILED, Status.DEAD})
"""Statuses a replay claims again."""

FORCE_ONLY = frozenset({Status.COMPLETED, Status.IGNORED})
"""Statuses a replay claims again only with `force`."""

_OK = frozenset({"completed", "ignored", "duplicate", "skipped", "would_replay"})


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did to one event.

    `outcome` is a delivery outcome (`completed`, `ignored`, `duplicate`, `failed`, `dead`,
    `in_flight`), or `would_replay` (dry run), `skipped` (settled, and no `force`),
    `missing` (not in the ledger), `invalid` (no usable stored payload), `no_handler` (the
    handler that failed is not registered here), `unavailable` (Firestore or Stripe's API
    could not be reached) or `misconfigured` (e.g. no STRIPE_API_KEY for a thin event).
    """

    event_id: str
    event_type: str | None
    status_before: str | None
    outcome: str
    attempt: int | None = None
    error: str | None = None
    duration_ms: float | None = None

    @property
    def ok(self) -> bool:
        """Whether the event is now settled as the operator asked (or would be)."""
        return self.outcome in _OK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def select_event_ids(
    ledger: EventLedger,
    *,
    status: str,
    event_type: str | None = None,
    since: datetime | None = None,
) -> list[str]:
    """The IDs of the records in `status` (and of `event_type`, received since `since`).

    Read in full before any is replayed: replaying changes the status the query filters on.
    """
    query = event_query(ledger, status=status, event_type=event_type, since=since)
    return [snapshot.id for snapshot in scan(query.select(["received_at"]))]


def replay_event(
    event_id: str,
    service: WebhookService,
    *,
    force: bool = False,
    dry_run: bool = False,
) -> ReplayResult:
    """Replay one stored event (see the module); a dry run reads the record and writes nothing."""
    started = time.perf_counter()
    ledger = service.ledger
    try:
        snapshot = ledger.read(event_id)
    except LedgerUnavailable as error:
        return ReplayResult(event_id, None, None, "unavailable", error=str(error))
    if not snapshot.exists:
        return ReplayResult(
            event_id, None, None, "missing", error="not in the ledger (reconcile fetches it)"
        )
    record = snapshot.to_dict() or {}
    status, event_type = record.get("status"), record.get("type")

    def result(outcome: str, **details: Any) -> ReplayResult:
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        return ReplayResult(event_id, event_type, status, outcome, duration_ms=elapsed, **details)

    if status in FORCE_ONLY and not force:
        return result("skipped", error=f"already {status}; --force runs its handlers again")
    handler = failed_handler(record.get("last_error"))
    if handler is not None and handler not in service.registry.handler_names():
        return result(
            "no_handler",
            error=f"{handler} failed, and it is not registered here: set "
            "STRIPE_HANDLER_MODULES as the function has it, then replay",
        )
    if dry_run:
        return result("would_replay")
    payload = stored_payload(record)
    if payload is None:
        return result("invalid", error="the record holds no payload")
    try:
        received = parse_event(payload)
    except InvalidEvent as error:
        return result("invalid", error=f"stored payload: {error}")
    reclaim = REPLAYABLE | FORCE_ONLY if force else REPLAYABLE
    try:
        delivery = service.process(received, reclaim=reclaim, note=_note(force, ledger.clock()))
    except (LedgerUnavailable, StripeUnavailable) as error:
        return result("unavailable", error=str(error))
    except ConfigurationError as error:
        return result("misconfigured", error=str(error))
    return result(delivery.outcome.value, attempt=delivery.attempt, error=delivery.error)


def replay_events(
    event_ids: Iterable[str],
    service: WebhookService,
    *,
    force: bool = False,
    dry_run: bool = False,
    workers: int = 4,
    progress: Progress | None = None,
    on_result: Callable[[ReplayResult], None] | None = None,
) -> list[ReplayResult]:
    """Replay each event (in `workers` threads; different events never contend); results in
    the order of `event_ids`."""

    def one(event_id: str) -> ReplayResult:
        replayed = replay_event(event_id, service, force=force, dry_run=dry_run)
        if on_result is not None:
            on_result(replayed)
        if progress is not None:
            progress(1)
        return replayed

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, list(dict.fromkeys(event_ids))))


def _note(force: bool, now: datetime) -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    how = "replayed with --force" if force else "replayed"
    return f"{how} by stripe-ledger (user {user}) at {now.isoformat(timespec='seconds')}"
