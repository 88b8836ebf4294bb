"""The HTTP face of the function: the one place that turns outcomes and errors into statuses.

Every answer that is not 2xx makes Stripe retry the delivery, so a 2xx is given only when
the event is safely recorded: completed, ignored, a duplicate of a settled event, or
dead-lettered. One JSON log line is written per request.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import flask

from stripe_ledger import logs
from stripe_ledger.config import MAX_BODY_BYTES
from stripe_ledger.errors import (
    ConfigurationError,
    InvalidEvent,
    LedgerUnavailable,
    MethodNotAllowed,
    PayloadTooLarge,
    SignatureError,
    StripeUnavailable,
    WebhookError,
)
from stripe_ledger.outbox import Outbox
from stripe_ledger.outcomes import Delivery, Outcome
from stripe_ledger.service import WebhookService

__all__ = ["OUTBOX_RUN_LIMIT", "handle", "handle_outbox", "read_body"]

OUTBOX_RUN_LIMIT = 200
"""Due tasks one request to the outbox function looks at; the rest wait for the next one."""

_ERROR_STATUS: dict[type[WebhookError], tuple[int, int]] = {
    # error: (HTTP status, log level)
    MethodNotAllowed: (405, logging.WARNING),
    PayloadTooLarge: (413, logging.WARNING),
    SignatureError: (400, logging.WARNING),
    InvalidEvent: (400, logging.WARNING),
    ConfigurationError: (500, logging.CRITICAL),
    LedgerUnavailable: (503, logging.ERROR),
    StripeUnavailable: (503, logging.ERROR),
}

_OUTCOME_STATUS: dict[Outcome, tuple[int, int]] = {
    Outcome.COMPLETED: (200, logging.INFO),
    Outcome.IGNORED: (200, logging.INFO),
    Outcome.DUPLICATE: (200, logging.INFO),
    Outcome.DEAD: (200, logging.ERROR),
    Outcome.FAILED: (500, logging.ERROR),
    Outcome.IN_FLIGHT: (409, logging.WARNING),
    Outcome.CONTENDED: (409, logging.WARNING),
}

_CHUNK = 64 * 1024
_MISCONFIGURED = "the function is misconfigured; its logs say how"


def read_body(request: flask.Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, read without ever holding more than `limit` + one chunk in memory."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes")
    chunks, size = [], 0
    while chunk := request.stream.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class _Answer:
    """What one request is answered, and how it is logged."""

    status: int
    level: int
    body: dict[str, Any]
    message: str
    fields: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    unexpected: Exception | None = None


def handle(request: flask.Request, service: Callable[[], WebhookService]) -> flask.Response:
    """Answer one request to the webhook function, and log it."""

    def deliver() -> _Answer:
        webhook = service()
        _require_post(request, "Stripe")
        body, signature = read_body(request), request.headers.get("Stripe-Signature")
        return _delivery_answer(webhook.deliver(body, signature))

    return _serve(request, deliver, what="handling a delivery")


def handle_outbox(request: flask.Request, service: Callable[[], WebhookService]) -> flask.Response:
    """Answer one request to the outbox function (Cloud Scheduler's): run the due tasks.

    No run is started after half the lease (the function's timeout), so that those started
    end before the platform stops the request. 200 with counts once the run is over, whatever
    the executors did: their failures are recorded on the tasks and retried with backoff.
    503 when Firestore cannot be queried, 500 when the function is misconfigured. One JSON
    log line per request, besides one per task run.
    """

    def run() -> _Answer:
        runner = service()
        _require_post(request, "the scheduler")
        outbox = Outbox(runner.db, runner.settings, runner.registry, runner.ledger.clock)
        deadline = time.monotonic() + runner.settings.lease_seconds / 2
        results = outbox.run_due(limit=OUTBOX_RUN_LIMIT, deadline=deadline)
        counts = Counter(result.outcome for result in results)
        summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
        return _Answer(
            200,
            logging.INFO if all(result.ok for result in results) else logging.WARNING,
            {"due": len(results), "counts": dict(counts)},
            f"outbox run: {summary or 'no task is due'}",
            {"task_counts": dict(counts)},
        )

    return _serve(request, run, what="running the outbox", prefix="outbox run: ")


def _require_post(request: flask.Request, sender: str) -> None:
    if request.method != "POST":
        raise MethodNotAllowed(f"method {request.method} not allowed; {sender} sends POST")


def _serve(
    request: flask.Request, work: Callable[[], _Answer], *, what: str, prefix: str = ""
) -> flask.Response:
    """Run `work`, map what it raises to a status, log one line, and answer."""
    started = time.perf_counter()
    try:
        answer = work()
    except WebhookError as error:
        answer = _error_answer(error, prefix)
    except Exception as error:  # noqa: BLE001 - a bug must still answer (500: the caller retries)
        answer = _Answer(
            500,
            logging.ERROR,
            {"error": "internal error"},
            f"unexpected error while {what}",
            {"status": "error", "error": f"{type(error).__name__}: {error}"},
            unexpected=error,
        )
    fields: dict[str, Any] = logs.trace_fields(
        request.headers.get("X-Cloud-Trace-Context"),
        request.headers.get("traceparent"),
        os.environ.get("GOOGLE_CLOUD_PROJECT"),
    )
    fields.update(answer.fields)
    fields.update(
        http_status=answer.status, duration_ms=round((time.perf_counter() - started) * 1000, 1)
    )
    logs.log(answer.level, answer.message, exc_info=answer.unexpected, **fields)
    return flask.Response(
        json.dumps(answer.body),
        status=answer.status,
        headers=answer.headers,
        mimetype="application/json",
    )


def _error_answer(error: WebhookError, prefix: str) -> _Answer:
    status, level = _ERROR_STATUS[type(error)]
    headers = {}
    if isinstance(error, MethodNotAllowed):
        headers["Allow"] = "POST"
    if isinstance(error, LedgerUnavailable | StripeUnavailable):
        headers["Retry-After"] = "10"
    fields = {
        "event_id": error.event_id,
        "event_type": error.event_type,
        "status": "rejected" if status < 500 else "error",
        "reason": getattr(error, "reason", None),
        "error": str(error),
    }
    message = f"{prefix}{type(error).__name__}: {error}"
    # A misconfiguration's details (module names, exception texts) are for the operator's
    # log, never for whoever sent the request.
    public = _MISCONFIGURED if isinstance(error, ConfigurationError) else str(error)
    return _Answer(status, level, {"error": public}, message, fields, headers)


def _delivery_answer(delivery: Delivery) -> _Answer:
    status, level = _OUTCOME_STATUS[delivery.outcome]
    headers: dict[str, str] = {}
    body, message = _describe(delivery, headers)
    fields = {
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "status": delivery.outcome.value,
        "attempt": delivery.attempt,
        "error": delivery.error,
    }
    # A handler's exception is logged with its traceback (the user's file and line).
    unexpected = delivery.exception if isinstance(delivery.exception, Exception) else None
    return _Answer(status, level, body, message, fields, headers, unexpected)


def _describe(delivery: Delivery, headers: dict[str, str]) -> tuple[dict[str, Any], str]:
    """The response body and log message for a delivery that reached the ledger."""
    outcome, event_id = delivery.outcome, delivery.event_id
    if outcome is Outcome.FAILED:
        return (
            {"error": "a handler failed; the event is recorded as failed", "event_id": event_id},
            f"event {event_id} failed on attempt {delivery.attempt}: {delivery.error}",
        )
    if outcome in (Outcome.IN_FLIGHT, Outcome.CONTENDED):  # nothing wrong: Stripe retries
        headers["Retry-After"] = str(delivery.retry_after or 1)
        if outcome is Outcome.IN_FLIGHT:
            why = "another delivery is processing this event"
            message = f"event {event_id} is being processed by another delivery"
        else:
            why = "other events kept changing what this event changes"
            message = f"event {event_id} not applied: {delivery.error}"
        return {"error": f"{why}; retry later", "event_id": event_id}, message
    if outcome is Outcome.DEAD:
        return (
            {"status": outcome.value, "event_id": event_id},
            f"event {event_id} dead-lettered after {delivery.attempt} attempts: {delivery.error}; "
            "fix the cause, then replay it with `stripe-ledger replay`",
        )
    return {"status": outcome.value, "event_id": event_id}, f"event {event_id} {outcome.value}"
