"""Read objects and events from Stripe's API for one delivery (thin events, refetch mode).

The calls happen after the event is claimed and outside its transaction: they are outside
effects, and a transaction body may run more than once. All the calls of one delivery share
one deadline, STRIPE_API_TIMEOUT_SECONDS, retries included (429, 409, 5xx and connection
errors, with backoff: `stripe_api.StripeApi`); past it, the delivery is recorded `failed` and
answered 503, and Stripe retries it later.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import stripe

from stripe_ledger.config import Settings
from stripe_ledger.errors import StripeUnavailable
from stripe_ledger.operation_errors import OperationFailed
from stripe_ledger.registry import matches
from stripe_ledger.stripe_api import StripeApi, make_client
from stripe_ledger.verify import VerifiedEvent

__all__ = ["RETRIEVABLE", "StripeFetcher", "refetches"]

RETRIEVABLE = frozenset(
    {
        "customer",
        "subscription",
        "invoice",
        "payment_intent",
        "charge",
        "refund",
        "dispute",
        "checkout.session",
        "product",
        "price",
    }
)
"""Object types refetch mode reads back (the projected ones), at `/v1/<type>s/<id>`."""


class StripeFetcher:
    """GETs on Stripe's API, every call of a delivery within one time budget."""

    def __init__(
        self,
        client: stripe.StripeClient,
        budget_seconds: float,
        *,
        api: StripeApi | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.budget_seconds = budget_seconds
        self.api = api or StripeApi(client, max_retries=3, base_delay=0.2, max_delay=2.0)
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeFetcher | None:
        """The fetcher for the configured API key, or None without one."""
        if not settings.stripe_api_key:
            return None
        timeout = max(1.0, settings.stripe_api_timeout_seconds / 2)
        client = make_client(settings.stripe_api_key, settings.stripe_api_base, timeout)
        return cls(client, settings.stripe_api_timeout_seconds)

    def deadline(self) -> float:
        """A deadline (`time.monotonic()`) for the calls of a delivery starting now."""
        return time.monotonic() + self.budget_seconds

    def get(
        self,
        path: str,
        *,
        deadline: float,
        context: str | None = None,
        account: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """`GET path` (with query `params`) as a dict, or None when Stripe answers 404; sent
        in the `context` (`Stripe-Context`, as thin events name it) or for the connected
        `account` (`Stripe-Account`) if given. Raises `StripeUnavailable` (and
        `ConfigurationError` for a refused key)."""

        def send() -> dict[str, Any] | None:
            options: dict[str, Any] = {"stripe_context": context} if context else {}
            if account:
                options["stripe_account"] = account
            try:
                response = self.client.raw_request("get", path, **(params or {}), **options)
            except stripe.InvalidRequestError as error:
                if error.http_status == 404:
                    return None
                raise
            body: dict[str, Any] = json.loads(response.body)
            return body

        try:
            return self.api.call(f"GET {path}", send, deadline=deadline)
        except OperationFailed as error:
            raise StripeUnavailable(str(error)) from error

    def current_object(
        self, object_type: str, object_id: str, *, deadline: float, account: str | None = None
    ) -> dict[str, Any]:
        """The object's state now; a 404 gives `{"id", "object", "deleted": true}`."""
        path = f"/v1/{object_type.replace('.', '/')}s/{object_id}"
        found = self.get(path, deadline=deadline, context=account)
        if found is None:
            return {"id": object_id, "object": object_type, "deleted": True}
        return found

    def refetched(self, received: VerifiedEvent) -> VerifiedEvent:
        """`received` carrying its object's current state (refetch mode)."""
        obj = received.object
        observed_at = self.clock()
        current = self.current_object(
            str(obj["object"]),
            str(obj["id"]),
            deadline=self.deadline(),
            account=received.account,
        )
        return received.with_object(current, observed_at)


def refetches(settings: Settings, received: VerifiedEvent) -> bool:
    """Whether refetch mode applies to `received`: on, its object retrievable, its type not
    opted out (STRIPE_REFETCH_EXCLUDE holds event types or `family.*` patterns)."""
    if not settings.refetch or received.object_id is None:
        return False
    if received.object.get("object") not in RETRIEVABLE:
        return False
    return not any(matches(pattern, received.type) for pattern in settings.refetch_exclude)
