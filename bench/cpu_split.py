"""Where a first delivery's CPU goes: the pipeline alone, and the HTTP stack it is served on.

`python -m bench.cpu_split` measures, against FIRESTORE_EMULATOR_HOST or an emulator it
starts, the process CPU time per operation (not wall time) of:

- the raw read-then-write transaction of `make bench`'s floor (b), in this process;
- the pipeline alone: `WebhookService.deliver` of a signed PaymentIntent event, in this
  process, with the client and handlers `main.py` builds (no HTTP, no gunicorn), for first
  deliveries and for duplicates of settled events, fresh and an hour old;
- the served function (`main.py` on functions-framework and gunicorn, as `make bench`
  serves it) and floor (a), the bare served function, measured in their own processes.

Each at concurrency 1 and 16, in alternating rounds, so that `make bench`'s ratio (served
CPU per first delivery against the raw transaction's) can be read as the pipeline's own
ratio plus what serving HTTP costs. Beside each figure, the voluntary context switches per
operation (a thread blocking on a lock, the GIL or a socket, and switched out), which tell
whether serving makes the pipeline block more often than in process (docs/scaling.md, "The
served remainder", quotes a run).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Callable

from bench._events import payment_event, signed
from bench._load import closed_loop
from bench._serve import ROOT, FunctionProcess, function_env, post
from bench.run import _BARE, _emulator, _raw_transaction
from stripe_ledger.service import build_service

__all__ = ["main"]

_OLD = 3600
"""Age in seconds of the events whose duplicates are measured as old ones (past
STRIPE_REDELIVERY_AGE_SECONDS, as every Stripe retry is)."""


Figure = tuple[float, float]
"""Milliseconds of CPU and voluntary context switches, per operation."""


def _in_process(operation: Callable[[int], None], total: int, concurrency: int) -> Figure:
    """This process's CPU and voluntary context switches per operation over a closed loop
    (its threads' switches counted by the kernel, those of threads that ended included)."""
    began, switched = time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
    loop = closed_loop(operation, total, concurrency)
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - switched
    return 1000 * (time.process_time() - began) / loop.total, switches / loop.total


def _served(server: FunctionProcess, total: int, concurrency: int) -> Figure:
    """The server's CPU and voluntary context switches per first delivery over a closed
    loop."""
    bodies = [signed(payment_event()) for _ in range(total)]
    before, switched = server.cpu_seconds(), server.waits()
    loop = closed_loop(lambda index: _post_ok(server, *bodies[index]), total, concurrency)
    switches = server.waits() - switched
    return 1000 * (server.cpu_seconds() - before) / loop.total, switches / loop.total


def _post_ok(server: FunctionProcess, body: bytes, headers: dict[str, str]) -> None:
    answer = post(server.port, body, headers)
    if answer.status != 200:
        raise RuntimeError(f"HTTP {answer.status}: {answer.body[:200]!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_split", description=__doc__)
    parser.add_argument("--operations", type=int, default=400, help="per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    with _emulator() as host:
        env = function_env(host, f"bench-cpu-split-{os.getpid()}")
        service = build_service({**os.environ, **env})
        db = service.db
        ours = FunctionProcess(ROOT / "main.py", "stripe_webhook", env, threads=16)
        bare = FunctionProcess(_BARE, "bare", env, threads=16)
        figures: dict[str, list[Figure]] = {}
        try:
            for server in (ours, bare):
                server.start(lambda: signed(payment_event()))
            for _ in range(20):  # warm both channels and the servers' code paths
                _raw_transaction(db, db.collection("bench_floor").document(uuid.uuid4().hex))
                service.deliver(*_signature(signed(payment_event())))
                _post_ok(ours, *signed(payment_event()))
            for _ in range(args.rounds):
                for concurrency in (1, 16):
                    bodies = [_signature(signed(payment_event())) for _ in range(args.operations)]

                    def raw(index: int) -> None:
                        ref = db.collection("bench_floor").document(uuid.uuid4().hex)
                        _raw_transaction(db, ref)

                    def deliver(index: int, bodies: list[tuple[bytes, str]] = bodies) -> None:
                        service.deliver(*bodies[index])

                    old = [_signature(signed(payment_event(_OLD))) for _ in range(args.operations)]
                    for body, signature in old:
                        service.deliver(body, signature)

                    def old_again(index: int, old: list[tuple[bytes, str]] = old) -> None:
                        service.deliver(*old[index])

                    measured = {
                        "raw transaction, in process": _in_process(
                            raw, args.operations, concurrency
                        ),
                        "pipeline (deliver), in process": _in_process(
                            deliver, args.operations, concurrency
                        ),
                        # The same events again: duplicates of settled fresh events.
                        "fresh duplicate, in process": _in_process(
                            deliver, args.operations, concurrency
                        ),
                        "hour-old duplicate, in process": _in_process(
                            old_again, args.operations, concurrency
                        ),
                        "served function (main.py)": _served(ours, args.operations, concurrency),
                        "floor (a), served": _served(bare, args.operations, concurrency),
                    }
                    for name, value in measured.items():
                        figures.setdefault(f"c{concurrency} {name}", []).append(value)
        finally:
            for server in (ours, bare):
                server.stop()
                server.remove_log()
    print(
        f"CPU ms and voluntary context switches per operation, median of {args.rounds} rounds"
        f" of {args.operations}:"
    )
    for concurrency in (1, 16):
        row = {
            name.split(" ", 1)[1]: (
                statistics.median(cpu for cpu, _ in values),
                statistics.median(switches for _, switches in values),
            )
            for name, values in figures.items()
            if name.startswith(f"c{concurrency} ")
        }
        floor_b = row["raw transaction, in process"][0]
        print(f"  concurrency {concurrency}:")
        for name, (cpu, switches) in row.items():
            print(
                f"    {name:34s} {cpu:6.2f}  ({cpu / floor_b:.2f}x the raw transaction)"
                f"  {switches:5.1f} switches"
            )
    return 0


def _signature(delivery: tuple[bytes, dict[str, str]]) -> tuple[bytes, str]:
    body, headers = delivery
    return body, headers["Stripe-Signature"]


if __name__ == "__main__":
    sys.exit(main())
