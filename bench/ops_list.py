"""How fast `stripe-ledger` reads a ledger of 100,000 events: `python -m bench.ops_list`.

Seeds N ledger records (the contract's fields and a realistic 1.5 kB payload; 94% completed,
3% ignored, 2% failed, 1% dead, ten types, received over 30 days) with batched writes into a
fresh project of the emulator (FIRESTORE_EMULATOR_HOST, or one started here), then times:

- `operations.list_events` in this process (the query alone): the newest page, each filter
  the composite indexes serve, `--since 1d`, and a page deep in the ledger (`--after`);
- the same through the console script (what an operator waits for, start-up included);
- `stats --since 7d` in process: the full projected scan it used to be, next to the
  aggregation queries it is now (the same result is checked), and its floor: one `count()`
  of the window, and that count's time multiplied by the number of queries stats sent
  (counted on the wire), which is what stats costs on an emulator that scans per query;
- `stats --since 1d` and all-time, and `replay --status dead --dry-run` (selection).

Each listing is printed next to its own floor: the same query (filters and order) fetched
bare, `query.limit(50).get()`, in the same run. The first figure is the emulator's overall
floor: 50 documents with no filter, order or projection.
The emulator evaluates every query by scanning the collection, so on it a page costs time
in proportion to the ledger; Firestore reads only the page's index entries and documents.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.aggregation import AggregationQuery

from bench._rpcs import RpcCounter, intercept
from stripe_ledger.config import Settings
from stripe_ledger.emulator import Emulator
from stripe_ledger.ledger import EventLedger
from stripe_ledger.operations import event_query, list_events, stats

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "stripe-ledger"
TYPES = [
    "invoice.paid",
    "invoice.payment_failed",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "charge.succeeded",
    "charge.refunded",
    "checkout.session.completed",
    "customer.updated",
]
STATUSES = [("completed", 94), ("ignored", 3), ("failed", 2), ("dead", 1)]
_BATCH = 500


def seed(db: firestore.Client, count: int, now: datetime) -> dict[str, Any]:
    """Write `count` records in batches of 500 (8 at a time); what a deep cursor needs."""
    rng = random.Random(5)  # noqa: S311 - reproducible test data, not secrets
    statuses = [status for status, weight in STATUSES for _ in range(weight)]
    collection = db.collection("stripe_events")
    filler = "x" * 1200

    def record(n: int) -> tuple[str, dict[str, Any]]:
        received = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
        event_id = f"evt_bench{n:07d}{uuid.uuid4().hex[:12]}"
        event_type = TYPES[n % len(TYPES)]
        status = statuses[n % len(statuses)]
        payload = json.dumps(
            {
                "id": event_id,
                "object": "event",
                "type": event_type,
                "created": int(received.timestamp()),
                "data": {"object": {"id": f"obj_{n}", "filler": filler}},
            }
        )
        failed = status in ("failed", "dead")
        return event_id, {
            "type": event_type,
            "status": status,
            "attempts": 5 if status == "dead" else 1,
            "received_at": received,
            "updated_at": received,
            "completed_at": None if failed else received,
            "lease_expires_at": None,
            "last_error": "RuntimeError: boom" if failed else None,
            "livemode": False,
            "api_version": "2024-06-20",
            "created": received,
            "object_id": f"obj_{n}",
            "account": None,
            "expire_at": received + timedelta(days=35),
            "payload": payload,
        }

    records = [record(n) for n in range(count)]

    def commit(start: int) -> None:
        batch = db.batch()
        for event_id, fields in records[start : start + _BATCH]:
            batch.set(collection.document(event_id), fields)
        batch.commit(timeout=120)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(commit, range(0, count, _BATCH)))
    seconds = time.perf_counter() - started
    by_time = sorted(records, key=lambda item: item[1]["received_at"], reverse=True)
    return {
        "seconds": round(seconds, 1),
        "per_second": round(count / seconds),
        "middle_id": by_time[count // 2][0],
    }


def timed(name: str, call: Callable[[], Any], repeat: int) -> dict[str, float]:
    """Median and max of `repeat` calls, in ms; printed as soon as measured."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    figures = {"p50_ms": round(statistics.median(samples), 1), "max_ms": round(max(samples), 1)}
    print(f"  {name:52} {figures['p50_ms']:>9} ms {figures['max_ms']:>9} ms", flush=True)
    return figures


def run_cli(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(  # noqa: S603 - our own console script
        [str(CLI), *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    # 1 is an answer (e.g. a dry-run replay whose events have no handler here); 2 is not.
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{args}: {done.returncode}\n{done.stderr}")


def clear(host: str, project: str) -> None:
    """Delete the project's documents from the emulator (it keeps everything in memory)."""
    url = f"http://{host}/emulator/v1/projects/{project}/databases/(default)/documents"
    request = urllib.request.Request(url, method="DELETE")
    with urllib.request.urlopen(request, timeout=60):  # noqa: S310
        pass


@contextmanager
def emulator_host() -> Iterator[str]:
    existing = os.environ.get("FIRESTORE_EMULATOR_HOST")
    if existing:
        yield existing
        return
    with Emulator() as emulator:
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
        yield emulator.host


class _AllThreads(RpcCounter):
    """Counts the RPCs of every thread (stats sends its queries from a pool)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _count(self, details: Any) -> None:
        with self._lock:
            self.calls[str(details.method).rsplit("/", 1)[-1]] += 1


def measure(
    db: firestore.Client, project: str, middle_id: str, now: datetime, repeat: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Time the listings in this process, then the console script's commands."""
    ledger = EventLedger(db, Settings(webhook_secrets=(), firestore_timeout_seconds=120))
    queries: dict[str, dict[str, Any]] = {
        "newest 50": {},
        "--status failed": {"status": "failed"},
        "--type invoice.paid": {"event_type": "invoice.paid"},
        "--status dead --type invoice.paid": {"status": "dead", "event_type": "invoice.paid"},
        "--since 1d": {"since": now - timedelta(days=1)},
        "--after (middle of the ledger)": {"after": middle_id},
    }
    print(f"list_events (a page of 50), in process, p50 / max of {repeat}:", flush=True)
    # The emulator's floor: 50 documents with no filter, order or projection at all.
    baseline = "baseline: collection.limit(50).get()"
    in_process = {baseline: timed(baseline, ledger.collection.limit(50).get, repeat)}
    for name, query in queries.items():
        in_process[name] = timed(name, partial(list_events, ledger, limit=50, **query), repeat)
        filters = {k: v for k, v in query.items() if k != "after"}
        bare = event_query(ledger, **filters).limit(50)
        if "after" in query:
            bare = bare.start_after(ledger.ref(query["after"]).get(field_paths=["received_at"]))
        in_process[f"  floor: {name}"] = timed("  floor: the same query, bare", bare.get, repeat)
    week = now - timedelta(days=7)
    print("stats --since 7d, in process, one run each:", flush=True)
    # The emulator's floor for stats: one aggregation query over the window.
    one_count = AggregationQuery(event_query(ledger, since=week)).count()
    in_process["  floor: one count() of the window"] = timed(
        "  floor: one count() of the window", one_count.get, repeat
    )
    # What stats did before issue 13, the whole window read: its read bound as high as a
    # query limit goes (a 32-bit integer).
    read, counted = [], []
    in_process["stats 7d: full scan (before)"] = timed(
        "stats 7d: full scan (before)",
        lambda: read.append(stats(ledger, since=week, read_window_at_most=2**31 - 2)),
        1,
    )
    queries_sent = _AllThreads()
    counted_db = firestore.Client(project=project)
    intercept(counted_db, queries_sent, 120)
    counted_ledger = EventLedger(counted_db, ledger.settings)
    in_process["stats 7d: aggregation queries (now)"] = timed(
        "stats 7d: aggregation queries (now)",
        lambda: counted.append(stats(counted_ledger, since=week)),
        1,
    )
    # On the emulator every query scans the whole collection, so stats costs about its
    # number of queries times the floor (Firestore reads only the index entries matched).
    sent = queries_sent.calls["RunQuery"] + queries_sent.calls["RunAggregationQuery"]
    floor = in_process["  floor: one count() of the window"]["p50_ms"]
    in_process["  floor: its queries x one count()"] = {"queries": sent, "p50_ms": sent * floor}
    print(
        f"    floor: its {sent} queries x one count() {sent * floor:>20.1f} ms",
        flush=True,
    )
    before, after = read[0], counted[0]
    if (after.total, after.by_status, after.by_type) != (
        before.total,
        before.by_status,
        before.by_type,
    ):
        raise RuntimeError("stats: the aggregation result differs from the scan's")
    env = {
        **os.environ,
        "GOOGLE_CLOUD_PROJECT": project,
        "STRIPE_FIRESTORE_TIMEOUT_SECONDS": "120",
    }
    commands = {
        "--help (start-up alone)": ["--help"],
        "events list": ["events", "list", "--json"],
        "events list --status dead --type invoice.paid": [
            "events", "list", "--status", "dead", "--type", "invoice.paid", "--json",
        ],
        "events list --after (middle)": ["events", "list", "--after", middle_id, "--json"],
        "stats --since 1d": ["stats", "--since", "1d", "--json"],
        "stats --since 7d": ["stats", "--since", "7d", "--json"],
        "replay --status dead --since 7d --dry-run": [
            "replay", "--status", "dead", "--since", "7d", "--dry-run", "--json",
        ],
    }  # fmt: skip
    print("console script, wall time (start-up included), one run each:", flush=True)
    console = {
        name: timed(name, partial(run_cli, command, env), 1) for name, command in commands.items()
    }
    return in_process, console


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ops_list", description=__doc__)
    parser.add_argument(
        "--records", type=int, default=100_000, help="ledger size (e.g. 5000 to iterate)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "ops_list.json")
    args = parser.parse_args(argv)

    with emulator_host() as host:
        project = f"bench-ops-{uuid.uuid4().hex[:8]}"
        db = firestore.Client(project=project)
        now = datetime.now(UTC)
        print(f"seeding {args.records} records into {project} on {host} ...", flush=True)
        seeded = seed(db, args.records, now)
        print(f"  {seeded['seconds']} s ({seeded['per_second']}/s)", flush=True)

        try:
            in_process, console = measure(db, project, seeded["middle_id"], now, args.repeat)
        finally:
            clear(host, project)

    report = {
        "records": args.records,
        "seed": seeded,
        "list_events_in_process": in_process,
        "console_script": console,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
