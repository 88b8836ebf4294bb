"""What the emulator's CPU goes into for a first delivery: `python -m bench.emulator_writes`.

The throughput benchmark finds the emulator's own CPU per delivery above that of a raw
transaction; on a 2-core machine that runs both the emulator and the function, that CPU is
part of what bounds the throughput. This takes one real first delivery of a PaymentIntent event
(`pipeline.process_event`, in this process), reads back the two documents it wrote (the
ledger record and the projection), and measures the emulator's CPU per operation (from
/proc) and the operations per second, at concurrency 1 and 16 (`--operations` each, each kind
in turn, `--rounds` times), for:

- floor (b), the raw read-then-write transaction of one small document;
- creating a copy of the ledger record (the claim's write);
- reading a missing document (the projection's unlocked read);
- creating a copy of the projection: as stored (Stripe's object as a nested map under
  `object`), with `object` as JSON text instead, and without `object`.

It prints the median of each; how much a kind's rate grows from concurrency 1 to 16 tells
how far the emulator runs such operations side by side. The emulator runs here
(FIRESTORE_EMULATOR_HOST, or one started here) for its CPU to be read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from google.cloud import firestore

import handlers
from bench._events import SECRET, payment_event
from bench._serve import cpu_seconds, emulator_pids
from bench.run import _emulator, _raw_transaction
from stripe_ledger.config import Settings
from stripe_ledger.ledger import EventLedger
from stripe_ledger.pipeline import process_event
from stripe_ledger.registry import import_handler_modules
from stripe_ledger.verify import parse_event

__all__ = ["main"]

_CONCURRENCIES = (1, 16)


def _delivered(db: firestore.Client) -> tuple[dict[str, Any], dict[str, Any]]:
    """One real first delivery; the ledger record and the projection document it wrote."""
    import_handler_modules(handlers.BUILTIN_MODULES)
    event = payment_event()
    ledger = EventLedger(db, Settings(webhook_secrets=(SECRET,)))
    process_event(parse_event(json.dumps(event)), db=db, ledger=ledger, registry=handlers.registry)
    record = ledger.ref(event["id"]).get().to_dict()
    projection = db.collection("payments").document(event["data"]["object"]["id"]).get().to_dict()
    if record is None or projection is None:
        raise RuntimeError("the delivery wrote no record or no projection")
    return record, projection


def _cpu_ms_per_operation(
    operation: Callable[[], object], count: int, emulator: list[int], concurrency: int
) -> tuple[float, float]:
    """The emulator's CPU ms per call of `operation` (`count` calls at `concurrency`), and
    the calls per second."""
    with ThreadPoolExecutor(concurrency) as pool:
        before, started = cpu_seconds(emulator), time.perf_counter()
        list(pool.map(lambda _: operation(), range(count)))
        seconds = time.perf_counter() - started
        spent = cpu_seconds(emulator) - before
    return spent / count * 1000, count / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator_writes", description=__doc__)
    parser.add_argument("--operations", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with _emulator() as host:
        emulator = emulator_pids(host)
        if not emulator:
            raise SystemExit(f"the emulator at {host} does not run here: its CPU cannot be read")
        db = firestore.Client(project=f"bench-writes-{uuid.uuid4().hex[:8]}")
        record, projection = _delivered(db)
        as_text = {**projection, "object": json.dumps(projection["object"])}
        without = {key: value for key, value in projection.items() if key != "object"}

        def new(collection: str) -> firestore.DocumentReference:
            return db.collection(collection).document(uuid.uuid4().hex)

        kinds: dict[str, Callable[[], object]] = {
            "floor (b): raw read-then-write transaction": lambda: _raw_transaction(
                db, new("bench_floor")
            ),
            "create the ledger record": lambda: new("stripe_events").create(record),
            "read a missing document": lambda: list(db.get_all([new("payments")])),
            "create the projection, object as a map": lambda: new("payments").create(projection),
            "create the projection, object as JSON text": lambda: new("payments").create(as_text),
            "create the projection without object": lambda: new("payments").create(without),
        }
        for operation in kinds.values():  # a fresh emulator's JVM is slow at first
            _cpu_ms_per_operation(operation, 100, emulator, max(_CONCURRENCIES))
        measured: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for name, operation in kinds.items():
                for concurrency in _CONCURRENCIES:
                    measured.setdefault((name, concurrency), []).append(
                        _cpu_ms_per_operation(operation, args.operations, emulator, concurrency)
                    )
    print(
        f"the emulator per operation, median of {args.rounds} rounds of {args.operations}: "
        "CPU ms, and operations per second at concurrency " + " and ".join(map(str, _CONCURRENCIES))
    )
    for name in kinds:
        cpu = statistics.median(ms for ms, _ in measured[name, max(_CONCURRENCIES)])
        rates = [
            f"{statistics.median(rate for _, rate in measured[name, c]):6.0f}/s"
            for c in _CONCURRENCIES
        ]
        print(f"  {name:<46} {cpu:6.2f} ms  {'  '.join(rates)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
