"""Backfill: fill the projections from Stripe's list endpoints, for objects no event brought.

An account that existed before the function has customers, subscriptions and prices that no
event will mention for months. `backfill` pages each family's list endpoint (`limit=100`,
`starting_after`; subscriptions with `status=all`) through the function's `StripeFetcher`
(the event's account as `Stripe-Account`, retries with backoff on 429 and 5xx, honouring
`Stripe-Should-Retry`), and projects every object with the projection's own `apply`, the code
and ordering rule of a live event: each object is a state read at the moment its page was
answered (as in refetch mode), so a webhook newer than the read wins and an older one loses,
and a backfill that runs for hours never regresses a document an event wrote after the page
was read. A page is written in one transaction: its documents read in one batch, each written
only if it orders after what is stored, and the family's progress
(`stripe_backfill/{account or "platform"}:{collection}`) in the same commit, so `--resume`
goes on exactly after the last page written and never reads a finished page again. Nothing
is recorded in the event ledger: no event was delivered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

from google.cloud import firestore

from stripe_ledger.config import Settings
from stripe_ledger.context import (
    Edits,
    HandlerContext,
    is_edit_conflict,
    read_declared,
    settling_conflicts,
)
from stripe_ledger.errors import LedgerUnavailable, StripeUnavailable
from stripe_ledger.fetch import StripeFetcher
from stripe_ledger.firestore_client import Snapshot, run_transaction, translated
from stripe_ledger.ledger import Clock
from stripe_ledger.outbox import Outbox, TaskBatch, run_enqueued
from stripe_ledger.verify import VerifiedEvent

__all__ = [
    "FAMILIES",
    "PROGRESS_COLLECTION",
    "BackfillResult",
    "Family",
    "Projects",
    "backfill",
    "families_named",
]


class Projects(Protocol):
    """A projection as the backfill uses it (`handlers._projection.Projection` is one)."""

    @property
    def collection(self) -> str: ...

    def applies_to(self, received: VerifiedEvent) -> bool: ...

    def edits(self, ctx: HandlerContext) -> list[firestore.DocumentReference]: ...

    def apply(self, ctx: HandlerContext) -> None: ...


PROGRESS_COLLECTION = "stripe_backfill"
"""Where each family's progress is kept (`--resume` reads it)."""

PAGE_SIZE = 100
"""Stripe's largest page."""

_TRANSACTION_ATTEMPTS = 5  # the client library's default for a transaction

BACKFILL_EVENT_ID = "backfill"
"""`last_event_id` of a document the backfill wrote."""

_COUNTS = ("pages", "objects", "written")


@dataclass(frozen=True)
class Family:
    """One projection's list endpoint."""

    collection: str
    path: str
    stage: int
    """Families of a lower stage are filled first: the catalog, then customers, then the
    objects that name them (the projections do not depend on each other; apps may)."""
    params: Mapping[str, str] = field(default_factory=dict)


FAMILIES: tuple[Family, ...] = (
    Family("products", "/v1/products", 0),
    Family("prices", "/v1/prices", 0),
    Family("customers", "/v1/customers", 1),
    Family("subscriptions", "/v1/subscriptions", 2, {"status": "all"}),
    Family("invoices", "/v1/invoices", 2),
    Family("invoice_payments", "/v1/invoice_payments", 2),
    Family("payments", "/v1/payment_intents", 2),
    Family("charges", "/v1/charges", 2),
    Family("refunds", "/v1/refunds", 2),
    Family("disputes", "/v1/disputes", 2),
    Family("checkout_sessions", "/v1/checkout/sessions", 2),
)
"""Every family a projection may hold, in the order they are filled."""


@dataclass(frozen=True)
class BackfillResult:
    """What the backfill did to one collection.

    `outcome`: `done` (every page written), `counted` (dry run), `interrupted` (stopped on
    request after a page; `--resume` goes on), `failed` (Stripe's API or Firestore gave up;
    `--resume` goes on), `skipped` (finished by an earlier run that `--resume` continues).
    """

    collection: str
    outcome: str
    pages: int = 0
    objects: int = 0
    written: int = 0
    """Documents written: the others already held a state as new or newer."""
    error: str | None = None
    duration_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in ("done", "counted", "skipped")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def families_named(names: Sequence[str], projections: Mapping[str, Projects]) -> list[Family]:
    """The families of `names` (all projected ones when empty), in filling order; raise
    `ValueError` naming an unknown or unprojected collection."""
    known = {family.collection: family for family in FAMILIES if family.collection in projections}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"not a projected collection: {', '.join(unknown)} (choose from {', '.join(known)})"
        )
    wanted = set(names) or set(known)
    return [family for family in known.values() if family.collection in wanted]


@dataclass
class _Run:
    db: firestore.Client
    fetcher: StripeFetcher
    projections: Mapping[str, Projects]
    settings: Settings
    outbox: Outbox | None
    clock: Clock
    since: datetime | None
    account: str | None
    dry_run: bool
    resume: bool
    stop: threading.Event
    progress: Callable[[str, int], None] | None

    def progress_ref(self, family: Family) -> firestore.DocumentReference:
        scope = self.account or "platform"
        return self.db.collection(PROGRESS_COLLECTION).document(f"{scope}:{family.collection}")


def backfill(
    families: Sequence[Family],
    *,
    db: firestore.Client,
    fetcher: StripeFetcher,
    projections: Mapping[str, Projects],
    settings: Settings,
    clock: Clock,
    outbox: Outbox | None = None,
    since: datetime | None = None,
    account: str | None = None,
    workers: int = 4,
    dry_run: bool = False,
    resume: bool = False,
    stop: threading.Event | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> list[BackfillResult]:
    """Fill `families` (see the module), `workers` lists at a time, stage by stage; results in
    the order of `families`. `progress(collection, n)` is told of each page's objects; `stop`,
    once set, ends every family after its current page. `outbox` takes the tasks the
    projections' followers enqueue (custom claims), run after each page's commit as after a
    delivery. Raises `ConfigurationError` when
    Stripe refuses the key (401, 403): nothing else can succeed then."""
    run = _Run(
        db,
        fetcher,
        projections,
        settings,
        outbox,
        clock,
        since,
        account,
        dry_run,
        resume,
        stop or threading.Event(),
        progress,
    )
    results: dict[str, BackfillResult] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for stage in sorted({family.stage for family in families}):
            staged = [family for family in families if family.stage == stage]
            for family, result in zip(
                staged, pool.map(lambda f: _fill(run, f), staged), strict=True
            ):
                results[family.collection] = result
    return [results[family.collection] for family in families]


def _fill(run: _Run, family: Family) -> BackfillResult:
    started = time.perf_counter()
    projection = run.projections[family.collection]
    ref = run.progress_ref(family)
    starting_after: str | None = None
    pages = objects = written = 0
    since = run.since

    def result(outcome: str, error: str | None = None) -> BackfillResult:
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        return BackfillResult(
            family.collection, outcome, pages, objects, written, error, duration_ms=elapsed
        )

    try:
        if run.resume:
            with translated("read the backfill's progress"):
                saved = ref.get().to_dict() or {}
            if saved.get("done"):
                return result("skipped")
            starting_after = saved.get("starting_after")
            pages, objects, written = (int(saved.get(key) or 0) for key in _COUNTS)
            since = saved.get("since") or since
        while not run.stop.is_set():
            page, more, observed_at = _page(run, family, starting_after, since)
            pages += 1
            objects += len(page)
            if page:
                starting_after = str(page[-1]["id"])
            if not run.dry_run:
                state = {
                    "collection": family.collection,
                    "account": run.account,
                    "starting_after": starting_after,
                    "pages": pages,
                    "objects": objects,
                    "since": since,
                    "done": not more,
                    "updated_at": run.clock(),
                }
                written += _write_page(run, projection, page, observed_at, ref, state, written)
            if run.progress is not None:
                run.progress(family.collection, len(page))
            if not more:
                return result("counted" if run.dry_run else "done")
        return result("interrupted", "stopped on request: run again with --resume")
    except (StripeUnavailable, LedgerUnavailable) as error:
        return result("failed", f"{error}; run again with --resume")


def _page(
    run: _Run, family: Family, starting_after: str | None, since: datetime | None
) -> tuple[list[dict[str, Any]], bool, float]:
    """One page of `family`'s list, whether more follow, and when it was read."""
    params: dict[str, Any] = {"limit": PAGE_SIZE, **family.params}
    if starting_after is not None:
        params["starting_after"] = starting_after
    if since is not None:
        params["created"] = {"gte": int(since.timestamp())}
    body = run.fetcher.get(
        family.path, deadline=run.fetcher.deadline(), account=run.account, params=params
    )
    observed_at = run.fetcher.clock()
    if body is None:
        raise StripeUnavailable(f"Stripe does not list {family.path} here (404)")
    data = [obj for obj in body.get("data") or [] if isinstance(obj, dict)]
    return data, bool(body.get("has_more")) and bool(data), observed_at


def _write_page(
    run: _Run,
    projection: Projects,
    page: list[dict[str, Any]],
    observed_at: float,
    progress_ref: firestore.DocumentReference,
    state: dict[str, Any],
    written_before: int,
) -> int:
    """Project one page in one transaction with the family's progress; how many documents
    it wrote."""
    states = [_state_read(obj, observed_at, run.account) for obj in page]
    states = [received for received in states if projection.applies_to(received)]

    def apply(tx: firestore.Transaction) -> tuple[int, TaskBatch | None]:
        snapshots: dict[str, Snapshot] = {}
        edits = Edits()
        tasks = run.outbox.batch(states[0], tx) if run.outbox is not None and states else None
        contexts = [
            HandlerContext(
                received,
                tx,
                run.db,
                0,
                tasks,
                settings=run.settings,
                snapshots=snapshots,
                edits=edits,
            )
            for received in states
        ]
        if contexts:  # the whole page's documents and followers' in one batch per round
            read_declared(
                contexts[0],
                lambda: (),
                lambda: [ref for c in contexts for ref in projection.edits(c)],
            )
        for ctx in contexts:
            projection.apply(ctx)
        written = edits.write(tx)
        count = sum(ref.parent.id == projection.collection for ref in written)
        if tasks is not None:
            tasks.write()
        tx.set(progress_ref, {**state, "written": written_before + count})
        return count, tasks

    def commit() -> tuple[int, TaskBatch | None]:
        with translated("write a backfilled page"):
            return run_transaction(run.db, apply, max_attempts=_TRANSACTION_ATTEMPTS)

    try:  # a live event's commit changed an edited document: read the page again
        count, tasks = settling_conflicts(
            commit, budget_seconds=run.settings.firestore_timeout_seconds
        )
    except Exception as error:
        if is_edit_conflict(error):  # contention, like Aborted: --resume writes the page
            raise LedgerUnavailable("documents the page edits kept changing") from error
        raise
    if run.outbox is not None and tasks is not None:
        run_enqueued(run.outbox, tasks)  # as after a delivery: at least once, never raises
    return int(count)


def _state_read(obj: dict[str, Any], observed_at: float, account: str | None) -> VerifiedEvent:
    """`obj` as a state read from Stripe's API at `observed_at`, shaped like an event."""
    created = obj.get("created")
    data = {
        "id": BACKFILL_EVENT_ID,
        "object": "event",
        "type": "backfill",
        "created": created if isinstance(created, int) else int(observed_at),
        "livemode": bool(obj.get("livemode")),
        "account": account,
        "api_version": None,
        "data": {"object": obj},
    }
    return VerifiedEvent(data, payload="", observed_at=observed_at)
