"""Settings read from the environment, validated once per instance.

Anything that would weaken verification or exactly-once delivery is refused with a
`ConfigurationError` instead of being silently accepted: no secret, a secret that is not a
Stripe signing secret, replay protection switched off, a retention shorter than the window in
which Stripe can still resend an event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from stripe_ledger.errors import ConfigurationError

__all__ = ["BUILTIN_HANDLER_MODULES", "LEASE_PER_TIMEOUT", "MAX_BODY_BYTES", "Settings"]

BUILTIN_HANDLER_MODULES: tuple[str, ...] = (
    "handlers.customers",
    "handlers.subscriptions",
    "handlers.invoices",
    "handlers.invoice_payments",
    "handlers.payment_intents",
    "handlers.charges",
    "handlers.refunds",
    "handlers.disputes",
    "handlers.checkout",
    "handlers.catalog",
    "handlers.access",
)
"""The built-in projections (see docs/projections.md), one module per Stripe object family,
imported at cold start before the modules named in STRIPE_HANDLER_MODULES."""

MAX_BODY_BYTES = 1024 * 1024
"""Bodies above this size are refused with 413 before they are read."""

LEASE_PER_TIMEOUT = 12
"""A delivery makes at most this many bounded Firestore calls after claiming an event (three
transaction attempts of begin, read and commit, a rollback, the failure record, a check), so a
lease this many times STRIPE_FIRESTORE_TIMEOUT_SECONDS outlives any live delivery."""

_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,100}$")
_MIN_RETENTION_DAYS = 30  # Stripe can resend an event for 30 days.
_MAX_TOLERANCE_SECONDS = 300  # stripe's default; a wider window weakens replay protection.
_API_KEY_PREFIXES = ("sk_", "rk_")
SUBSCRIPTION_STATUSES = frozenset(
    {
        "incomplete",
        "incomplete_expired",
        "trialing",
        "active",
        "past_due",
        "unpaid",
        "canceled",
        "paused",
    }
)
"""Every status a Stripe subscription can be in."""


@dataclass(frozen=True)
class Settings:
    """What the function needs to know, with the documented defaults."""

    webhook_secrets: tuple[str, ...]
    tolerance_seconds: int = _MAX_TOLERANCE_SECONDS
    max_attempts: int = 5
    retention_days: int = 35
    lease_seconds: int = 60
    redelivery_age_seconds: int = 120
    firestore_timeout_seconds: int = 5
    events_collection: str = "stripe_events"
    tasks_collection: str = "stripe_tasks"
    task_max_attempts: int = 10
    handler_modules: tuple[str, ...] = ()
    project: str | None = None
    database: str = "(default)"
    stripe_api_key: str | None = field(default=None, repr=False)
    stripe_api_base: str | None = None
    stripe_api_timeout_seconds: int = 10
    refetch: bool = False
    refetch_exclude: tuple[str, ...] = ()
    app_user_key: str = "app_user_id"
    """The customer metadata key naming the app's user (STRIPE_APP_USER_KEY)."""
    features_key: str = "features"
    """The product metadata key listing a product's features, comma-separated, for accounts
    that use no Stripe Entitlements (STRIPE_FEATURES_KEY)."""
    access_statuses: tuple[str, ...] = ("active", "trialing")
    """Subscription statuses that grant access (STRIPE_ACCESS_STATUSES; add `past_due` for a
    grace period)."""
    custom_claims: bool = False
    """Whether the outbox mirrors each user's access into Firebase Auth custom claims
    (STRIPE_CUSTOM_CLAIMS)."""

    @property
    def read_back_seconds(self) -> float:
        """How long reading back a write whose answer was lost may take (see
        `stripe_ledger.lease`): a quarter of a Firestore call's bound, at least half a second."""
        return max(0.5, self.firestore_timeout_seconds / 4)

    def minimum_lease(self) -> int:
        """The longest a claimed delivery can run: its bounded Firestore calls, and its calls
        to Stripe's API when a key is configured (thin events, refetch mode)."""
        api = self.stripe_api_timeout_seconds if self.stripe_api_key else 0
        return LEASE_PER_TIMEOUT * self.firestore_timeout_seconds + api

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, require_secret: bool = True) -> Settings:
        """Read and validate the settings; raise `ConfigurationError` naming what is wrong.

        `require_secret=False` is for tools that never verify a delivery (the operations
        CLI): the secret may then be unset, but a secret that is set must still be valid.
        """
        api = cls(
            webhook_secrets=(),
            firestore_timeout_seconds=_integer(
                environ, "STRIPE_FIRESTORE_TIMEOUT_SECONDS", cls.firestore_timeout_seconds
            ),
            stripe_api_key=environ.get("STRIPE_API_KEY", "").strip() or None,
            stripe_api_timeout_seconds=_integer(
                environ, "STRIPE_API_TIMEOUT_SECONDS", cls.stripe_api_timeout_seconds
            ),
        )
        settings = cls(
            webhook_secrets=_split(environ.get("STRIPE_WEBHOOK_SECRET", "")),
            tolerance_seconds=_integer(environ, "STRIPE_WEBHOOK_TOLERANCE", cls.tolerance_seconds),
            max_attempts=_integer(environ, "STRIPE_MAX_ATTEMPTS", cls.max_attempts),
            retention_days=_integer(environ, "STRIPE_EVENT_RETENTION_DAYS", cls.retention_days),
            lease_seconds=_integer(
                environ, "STRIPE_LEASE_SECONDS", max(cls.lease_seconds, api.minimum_lease())
            ),
            redelivery_age_seconds=_integer(
                environ, "STRIPE_REDELIVERY_AGE_SECONDS", cls.redelivery_age_seconds
            ),
            firestore_timeout_seconds=api.firestore_timeout_seconds,
            events_collection=environ.get("STRIPE_EVENTS_COLLECTION") or cls.events_collection,
            tasks_collection=environ.get("STRIPE_TASKS_COLLECTION") or cls.tasks_collection,
            task_max_attempts=_integer(environ, "STRIPE_TASK_MAX_ATTEMPTS", cls.task_max_attempts),
            handler_modules=_split(environ.get("STRIPE_HANDLER_MODULES", "")),
            project=environ.get("GOOGLE_CLOUD_PROJECT") or None,
            database=environ.get("FIRESTORE_DATABASE") or cls.database,
            stripe_api_key=api.stripe_api_key,
            stripe_api_base=environ.get("STRIPE_API_BASE", "").strip().rstrip("/") or None,
            stripe_api_timeout_seconds=api.stripe_api_timeout_seconds,
            refetch=_boolean(environ, "STRIPE_REFETCH"),
            refetch_exclude=_split(environ.get("STRIPE_REFETCH_EXCLUDE", "")),
            app_user_key=environ.get("STRIPE_APP_USER_KEY", "").strip() or cls.app_user_key,
            features_key=environ.get("STRIPE_FEATURES_KEY", "").strip() or cls.features_key,
            access_statuses=_split(environ.get("STRIPE_ACCESS_STATUSES", ""))
            or cls.access_statuses,
            custom_claims=_boolean(environ, "STRIPE_CUSTOM_CLAIMS"),
        )
        settings.validate(require_secret=require_secret)
        return settings

    def validate(self, *, require_secret: bool = True) -> None:
        """Raise `ConfigurationError` if any setting is unsafe or malformed."""
        if require_secret and not self.webhook_secrets:
            raise ConfigurationError("STRIPE_WEBHOOK_SECRET is unset or empty")
        for position, secret in enumerate(self.webhook_secrets, start=1):
            if not secret.startswith("whsec_") or len(secret) <= len("whsec_"):
                # Never echo the value: this message is logged.
                raise ConfigurationError(
                    f"STRIPE_WEBHOOK_SECRET entry {position} is not a Stripe signing secret "
                    "(it must start with whsec_)"
                )
        if not 1 <= self.tolerance_seconds <= _MAX_TOLERANCE_SECONDS:
            raise ConfigurationError(
                f"STRIPE_WEBHOOK_TOLERANCE must be between 1 and {_MAX_TOLERANCE_SECONDS} seconds "
                "(0 would switch off replay protection)"
            )
        if self.max_attempts < 1:
            raise ConfigurationError("STRIPE_MAX_ATTEMPTS must be at least 1")
        if self.retention_days < _MIN_RETENTION_DAYS:
            raise ConfigurationError(
                f"STRIPE_EVENT_RETENTION_DAYS must be at least {_MIN_RETENTION_DAYS}: Stripe can "
                "resend an event for 30 days, and a forgotten event would be processed again"
            )
        if self.lease_seconds < self.minimum_lease():
            raise ConfigurationError(
                f"STRIPE_LEASE_SECONDS must be at least {LEASE_PER_TIMEOUT} x "
                "STRIPE_FIRESTORE_TIMEOUT_SECONDS (+ STRIPE_API_TIMEOUT_SECONDS with an API key), "
                "the longest a delivery can take: a live delivery must never lose its claim to "
                f"an expired lease ({self.minimum_lease()} s here)"
            )
        if self.stripe_api_key and not self.stripe_api_key.startswith(_API_KEY_PREFIXES):
            raise ConfigurationError("STRIPE_API_KEY is not a Stripe secret or restricted key")
        if self.stripe_api_timeout_seconds < 1:
            raise ConfigurationError("STRIPE_API_TIMEOUT_SECONDS must be at least 1")
        if self.refetch and not self.stripe_api_key:
            raise ConfigurationError("STRIPE_REFETCH needs STRIPE_API_KEY to read objects")
        if self.redelivery_age_seconds < 0:
            raise ConfigurationError("STRIPE_REDELIVERY_AGE_SECONDS must not be negative")
        if self.firestore_timeout_seconds < 1:
            raise ConfigurationError("STRIPE_FIRESTORE_TIMEOUT_SECONDS must be at least 1")
        if not _COLLECTION_NAME.match(self.events_collection):
            raise ConfigurationError(
                "STRIPE_EVENTS_COLLECTION must be 1-100 letters, digits, '_' or '-'"
            )
        if not _COLLECTION_NAME.match(self.tasks_collection):
            raise ConfigurationError(
                "STRIPE_TASKS_COLLECTION must be 1-100 letters, digits, '_' or '-'"
            )
        if self.task_max_attempts < 1:
            raise ConfigurationError("STRIPE_TASK_MAX_ATTEMPTS must be at least 1")
        unknown = sorted(set(self.access_statuses) - SUBSCRIPTION_STATUSES)
        if unknown:
            raise ConfigurationError(
                f"STRIPE_ACCESS_STATUSES names no subscription status: {', '.join(unknown)} "
                f"(choose from {', '.join(sorted(SUBSCRIPTION_STATUSES))})"
            )


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _integer(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None


def _boolean(environ: Mapping[str, str], name: str) -> bool:
    raw = environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")
