"""The errors a delivery can end in; `stripe_ledger.http` maps each to one HTTP status."""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "InvalidEvent",
    "LedgerUnavailable",
    "MethodNotAllowed",
    "PayloadTooLarge",
    "SignatureError",
    "StripeUnavailable",
    "WebhookError",
]


class WebhookError(Exception):
    """Base of every error that ends a delivery before its event is safely recorded.

    `event_id` and `event_type` are set once the body has been verified, for the logs.
    """

    event_id: str | None = None
    event_type: str | None = None


class MethodNotAllowed(WebhookError):
    """The request is not a POST."""


class PayloadTooLarge(WebhookError):
    """The body is larger than the function accepts."""


class SignatureError(WebhookError):
    """The `Stripe-Signature` header is missing, unparseable, stale or matches no secret.

    `reason` is "missing", "stale" or "invalid": logged, so that alerts can tell a
    misconfigured secret from replayed deliveries.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidEvent(WebhookError):
    """A correctly signed body that is not a Stripe event the function can record."""


class ConfigurationError(WebhookError):
    """The function is misconfigured (settings or handler modules); no event can be taken."""


class LedgerUnavailable(WebhookError):
    """Firestore could not be reached, or contention was not resolved; Stripe should retry."""


class StripeUnavailable(WebhookError):
    """Stripe's API could not give what the event needs (thin event, refetch); Stripe should
    retry the delivery."""
