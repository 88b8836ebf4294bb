"""Read objects and events from Stripe's API for one delivery (thin events, refetch mode).

The calls happen after the event is claimed and outside its transaction: they are outside
effects, and a transaction body may run more than once. All the calls of one delivery share
one deadline, STRIPE_API_TIMEOUT_SECONDS, retries included (429, 409, 5xx and connection
errors, with backoff: `stripe_api.StripeApi`); past it, the delivery is recorded `failed` and
answered 503, and Stripe retries it later.

Only the API's own word deletes an object: a 404 says the key cannot see it (an object of
another account, a restricted key, a test-mode event sent to a live Connect endpoint), not
that it is gone. So a refetch that answers 404 keeps the event's snapshot, and an event of
the other mode than the key's is never fetched at all; both log a WARNING.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import stripe

from stripe_ledger.config import Settings
from stripe_ledger.errors import StripeUnavailable
from stripe_ledger.logs import log
from stripe_ledger.operation_errors import OperationFailed
from stripe_ledger.registry import matches
from stripe_ledger.stripe_api import StripeApi, make_client
from stripe_ledger.verify import VerifiedEvent

__all__ = ["RETRIEVABLE", "StripeFetcher", "key_livemode", "refetches"]

RETRIEVABLE = frozenset(
    {
        "customer",
        "subscription",
        "invoice",
        "invoice_payment",
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
        livemode: bool | None = None,
    ) -> None:
        self.client = client
        self.budget_seconds = budget_seconds
        self.api = api or StripeApi(client, max_retries=3, base_delay=0.2, max_delay=2.0)
        self.clock = clock
        self.livemode = livemode
        """The key's mode (None if its prefix does not say): events of the other mode are
        never fetched with it."""

    def can_read(self, received: VerifiedEvent) -> bool:
        """Whether the key may read `received`'s objects: the same mode as the event."""
        return self.livemode is None or self.livemode == received.livemode

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeFetcher | None:
        """The fetcher for the configured API key, or None without one."""
        if not settings.stripe_api_key:
            return None
        timeout = max(1.0, settings.stripe_api_timeout_seconds / 2)
        client = make_client(settings.stripe_api_key, settings.stripe_api_base, timeout)
        return cls(
            client,
            settings.stripe_api_timeout_seconds,
            livemode=key_livemode(settings.stripe_api_key),
        )

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

    def read_object(
        self, object_type: str, object_id: str, *, deadline: float, account: str | None = None
    ) -> dict[str, Any] | None:
        """The object's state now (`GET /v1/<type>s/<id>`), or None on a 404."""
        path = f"/v1/{object_type.replace('.', '/')}s/{object_id}"
        return self.get(path, deadline=deadline, context=account)

    def refetched(self, received: VerifiedEvent) -> VerifiedEvent:
        """`received` carrying its object's current state (refetch mode); unchanged, with a
        WARNING, when the key cannot read it (other mode, or a 404)."""
        obj = received.object
        if not self.can_read(received):
            unreadable(received, "the event's mode differs from STRIPE_API_KEY's")
            return received
        observed_at = self.clock()
        current = self.read_object(
            str(obj["object"]),
            str(obj["id"]),
            deadline=self.deadline(),
            account=received.account,
        )
        if current is None:
            unreadable(received, "Stripe's API answered 404 to this key")
            return received
        return received.with_object(current, observed_at)


def key_livemode(key: str | None) -> bool | None:
    """The mode of an API key from its prefix (`sk_live_`, `rk_test_`...), None if unknown."""
    for prefix, livemode in (("_live_", True), ("_test_", False)):
        if key and key[2:].startswith(prefix):
            return livemode
    return None


def unreadable(received: VerifiedEvent, why: str) -> None:
    """Log that `received`'s object could not be read from the API (and is not deleted)."""
    log(
        logging.WARNING,
        f"could not read {received.object.get('object')} {received.object_id} from Stripe's "
        f"API ({why}); kept as the event carries it, not marked deleted: check the key's "
        "mode, account and permissions",
        event_id=received.id,
        event_type=received.type,
        object_id=received.object_id,
        account=received.account,
    )


def refetches(settings: Settings, received: VerifiedEvent) -> bool:
    """Whether refetch mode applies to `received`: on, its object retrievable, its type not
    opted out (STRIPE_REFETCH_EXCLUDE holds event types or `family.*` patterns)."""
    if not settings.refetch or received.object_id is None:
        return False
    if received.object.get("object") not in RETRIEVABLE:
        return False
    return not any(matches(pattern, received.type) for pattern in settings.refetch_exclude)
