"""Load shapes: a closed loop at fixed concurrency, and a burst released at one instant."""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench._serve import Response, post

__all__ = ["Burst", "Loop", "burst", "closed_loop"]


@dataclass(frozen=True)
class Loop:
    """A closed-loop run: `total` operations by `concurrency` threads in `seconds`."""

    total: int
    concurrency: int
    seconds: float
    latencies: list[float]
    errors: list[str]

    @property
    def per_second(self) -> float:
        return self.total / self.seconds if self.seconds else 0.0


def closed_loop(operation: Callable[[int], None], total: int, concurrency: int) -> Loop:
    """Run `operation(0..total-1)` on `concurrency` threads, each starting the next index as
    soon as its previous operation returned; time the whole run and each operation."""
    indexes = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    start = threading.Barrier(concurrency + 1)

    def worker() -> None:
        start.wait()
        while True:
            with lock:
                index = next(indexes)
            if index >= total:
                return
            began = time.perf_counter()
            try:
                operation(index)
            except Exception as error:  # noqa: BLE001 - counted and reported, not raised
                with lock:
                    errors.append(f"{type(error).__name__}: {error}"[:300])
                continue
            elapsed = time.perf_counter() - began
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return Loop(total, concurrency, time.perf_counter() - began, latencies, errors)


@dataclass(frozen=True)
class Burst:
    """The answers to requests released together, in the order they were given."""

    responses: list[Response | None]
    errors: list[str]
    seconds: float


def burst(port: int, requests: Sequence[tuple[bytes, dict[str, str]]]) -> Burst:
    """Send every request at the same instant, each on its own connection.

    Each thread connects first; all wait on one barrier, then send. Connections are opened
    before the barrier so that the release is not staggered by TCP handshakes.
    """
    responses: list[Response | None] = [None] * len(requests)
    errors: list[str] = []
    lock = threading.Lock()
    gate = threading.Barrier(len(requests) + 1)

    def send(index: int) -> None:
        body, headers = requests[index]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            connection.connect()
        finally:
            gate.wait()
        try:
            responses[index] = post(port, body, headers, connection=connection)
        except Exception as error:  # noqa: BLE001 - an unanswered delivery is a finding
            with lock:
                errors.append(f"{type(error).__name__}: {error}"[:300])

    threads = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    gate.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return Burst(responses, errors, time.perf_counter() - began)
