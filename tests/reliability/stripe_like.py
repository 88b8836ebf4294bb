"""Deliver events the way Stripe does: signed, concurrently, and again until a 2xx."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

from tests.support import SECRET, sign

# Any failure to get an answer (refused, reset, cut mid-body by a kill) is what Stripe sees
# as a failed delivery, and retries.
NO_ANSWER = requests.RequestException


@dataclass
class Answer:
    """One HTTP attempt: status (0 when the connection failed, `error` then says how) and
    latency in seconds."""

    event_id: str
    status: int
    latency: float
    started: float
    error: str = ""


@dataclass
class Deliveries:
    """Every attempt made, in the order they finished."""

    answers: list[Answer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, answer: Answer) -> None:
        with self.lock:
            self.answers.append(answer)

    def statuses(self) -> list[int]:
        return [answer.status for answer in self.answers]

    def failed(self) -> list[Answer]:
        """The attempts answered 5xx or not at all: what a healthy function never gives."""
        return [answer for answer in self.answers if answer.status >= 500 or answer.status == 0]


def post(url: str, event: Mapping[str, Any]) -> Answer:
    """One signed POST (re-signed each time, as Stripe does) on a connection of its own; status
    0 if it never answered.

    A connection is never reused across attempts: Stripe's retries are minutes apart, while a
    kept-alive connection that idled for about gunicorn's keep-alive (2 s) can be closed by the
    server just as the next request goes out, a reset that says nothing about the function."""
    payload = json.dumps(event)
    started = time.monotonic()
    status, error = 0, ""
    try:
        response = requests.post(
            url,
            data=payload.encode(),
            headers={"Stripe-Signature": sign(payload, SECRET), "Content-Type": "application/json"},
            timeout=60,
        )
        status = response.status_code
    except NO_ANSWER as exc:
        error = f"{type(exc).__name__}: {exc}"
    return Answer(str(event["id"]), status, time.monotonic() - started, started, error)


def deliver_until_accepted(
    url: str,
    event: Mapping[str, Any],
    deliveries: Deliveries,
    *,
    deadline: float,
    pause: Callable[[int], float] = lambda attempt: min(0.2 * 2**attempt, 3.0),
) -> Answer:
    """Redeliver until a 2xx (Stripe's retries, compressed in time); fail past `deadline`."""
    attempt = 0
    while True:
        answer = post(url, event)
        deliveries.add(answer)
        if 200 <= answer.status < 300:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"{event['id']} not accepted: last status {answer.status}")
        time.sleep(pause(attempt) * random.uniform(0.5, 1.0))
        attempt += 1


def deliver_all(
    url: str,
    events: Iterable[Mapping[str, Any]],
    *,
    copies: Callable[[Mapping[str, Any]], int] = lambda event: 1,
    concurrency: int = 16,
    deadline_seconds: float = 180,
    seed: int = 7,
    deliveries: Deliveries | None = None,
) -> Deliveries:
    """Deliver the events in a shuffled order, each `copies(event)` times at once (the copies
    are submitted together, so they race each other), every copy retried until accepted.
    Attempts are added to `deliveries` as they finish, for callers that watch progress."""
    deliveries = Deliveries() if deliveries is None else deliveries
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    jobs = [event for event in shuffled for _ in range(copies(event))]
    deadline = time.monotonic() + deadline_seconds
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for future in [
            pool.submit(deliver_until_accepted, url, event, deliveries, deadline=deadline)
            for event in jobs
        ]:
            future.result()
    return deliveries


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
