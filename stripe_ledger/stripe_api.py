"""Stripe's API for the operations tool: a `StripeClient` from the environment, and calls that
are retried with backoff and report every retry.

The client's own retries (`max_network_retries`) cover connection errors, 409 and 5xx, but
not 429 (unless Stripe adds `Stripe-Should-Retry: true`), ignore `Retry-After`, and are
silent: an operator could not tell a slow reconcile from a rate-limited one. So the client is
built with `max_network_retries=0` and `StripeApi.call` retries instead: 429, 409, 5xx and
connection errors, with exponential backoff and jitter (at least `Retry-After`), honouring
`Stripe-Should-Retry: false`, and telling `on_retry` about each retry.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import stripe

from stripe_ledger.errors import ConfigurationError
from stripe_ledger.operation_errors import OperationFailed

__all__ = ["ApiRetry", "StripeApi", "client_from_env", "make_client"]

T = TypeVar("T")

_KEY_PREFIXES = ("sk_", "rk_")
_HTTP_TIMEOUT_SECONDS = 30


def client_from_env(environ: Mapping[str, str]) -> stripe.StripeClient:
    """A client for STRIPE_API_KEY, sent to STRIPE_API_BASE when that is set (tests)."""
    key = environ.get("STRIPE_API_KEY", "").strip()
    if not key:
        raise ConfigurationError(
            "STRIPE_API_KEY is unset: reconcile reads Stripe's Events API "
            "(a restricted key with read access to Events is enough)"
        )
    if not key.startswith(_KEY_PREFIXES):
        raise ConfigurationError("STRIPE_API_KEY is not a Stripe secret or restricted key")
    base = environ.get("STRIPE_API_BASE", "").strip().rstrip("/")
    return make_client(key, base or None, _HTTP_TIMEOUT_SECONDS)


def make_client(key: str, base: str | None, timeout: float) -> stripe.StripeClient:
    """A client for `key`, sent to `base` when given (tests), each request bounded by
    `timeout` seconds and never retried by the client itself (`StripeApi.call` retries)."""
    return stripe.StripeClient(
        key,
        base_addresses={"api": base} if base else None,
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=timeout),
    )


@dataclass(frozen=True)
class ApiRetry:
    """One retry about to happen: which, after what, and how long until it."""

    request: str
    retry: int
    max_retries: int
    delay_seconds: float
    http_status: int | None
    error: str


class StripeApi:
    """Calls Stripe through `client`, retrying transient failures (see the module)."""

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        max_retries: int = 5,
        base_delay: float = 0.5,
        max_delay: float = 20.0,
        on_retry: Callable[[ApiRetry], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.max_retries = max_retries
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.on_retry = on_retry
        self.sleep = sleep
        self.retries = 0
        """Retries made so far, over every call."""

    def call(self, request: str, send: Callable[[], T], *, deadline: float | None = None) -> T:
        """`send()`, retried; raise `ConfigurationError` for a refused key, else
        `OperationFailed` once an error is not transient, the retries are spent, or the next
        retry would start after `deadline` (a `time.monotonic()` value)."""
        retry = 0
        while True:
            try:
                return send()
            except stripe.AuthenticationError as error:
                raise ConfigurationError(
                    f"Stripe refused STRIPE_API_KEY: {_describe(error)}"
                ) from error
            except stripe.PermissionError as error:
                raise ConfigurationError(
                    f"STRIPE_API_KEY may not {request}: {_describe(error)}"
                ) from error
            except stripe.StripeError as error:
                delay = self._delay(retry + 1, error)
                late = deadline is not None and time.monotonic() + delay > deadline
                if not _transient(error) or retry >= self.max_retries or late:
                    spent = f" after {retry} retries" if retry else ""
                    raise OperationFailed(
                        f"Stripe API: {request} failed{spent}: {_describe(error)}"
                    ) from error
                retry += 1
                self.retries += 1
                if self.on_retry is not None:
                    self.on_retry(
                        ApiRetry(
                            request,
                            retry,
                            self.max_retries,
                            round(delay, 3),
                            error.http_status,
                            _describe(error),
                        )
                    )
                self.sleep(delay)

    def _delay(self, retry: int, error: stripe.StripeError) -> float:
        backoff = min(self.max_delay, self.base_delay * 2.0 ** (retry - 1))
        delay = backoff * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography
        retry_after = _header(error, "retry-after")
        try:
            wanted = float(retry_after) if retry_after is not None else 0.0
        except ValueError:
            wanted = 0.0
        return max(delay, min(wanted, self.max_delay))

    def list_events(
        self, *, created_gte: int, delivery_success: bool | None, page_size: int = 100
    ) -> Iterator[list[dict[str, Any]]]:
        """`GET /v1/events` page by page (newest first), each event as Stripe sent it."""
        starting_after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size, "created": {"gte": created_gte}}
            if delivery_success is not None:
                params["delivery_success"] = delivery_success
            if starting_after is not None:
                params["starting_after"] = starting_after
            page = self.call(
                "list events",
                lambda params=params: self.client.v1.events.list(params=params),  # type: ignore[misc]
            )
            events = _raw_events(page)
            yield events
            if not page.has_more or not events:
                return
            starting_after = str(events[-1]["id"])


def _raw_events(page: stripe.ListObject[stripe.Event]) -> list[dict[str, Any]]:
    """The page's events as plain dicts, from the response body when it is available."""
    response = page.last_response
    if response is not None:
        body = json.loads(response.body)
        return [dict(event) for event in body["data"]]
    return [event.to_dict() for event in page.data]


def _transient(error: stripe.StripeError) -> bool:
    if _header(error, "stripe-should-retry") == "false":
        return False
    if isinstance(error, stripe.RateLimitError | stripe.APIConnectionError):
        return True
    status = error.http_status or 0
    return status == 409 or status >= 500


def _header(error: stripe.StripeError, name: str) -> str | None:
    for key, value in (error.headers or {}).items():
        if key.lower() == name:
            return str(value)
    return None


def _describe(error: stripe.StripeError) -> str:
    status = f"HTTP {error.http_status}: " if error.http_status else ""
    message = error.user_message or type(error).__name__
    return f"{status}{message}"
