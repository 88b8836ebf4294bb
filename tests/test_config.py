"""Settings: defaults, and refusal of configuration that would weaken the function."""

from __future__ import annotations

import pytest

from stripe_ledger.config import Settings
from stripe_ledger.errors import ConfigurationError
from tests.support import SECOND_SECRET, SECRET


def test_defaults() -> None:
    """Only the secret is required; the rest has documented defaults."""
    settings = Settings.from_env({"STRIPE_WEBHOOK_SECRET": SECRET})
    assert settings.webhook_secrets == (SECRET,)
    assert (settings.tolerance_seconds, settings.max_attempts, settings.retention_days) == (
        300,
        5,
        35,
    )
    assert (settings.events_collection, settings.database, settings.lease_seconds) == (
        "stripe_events",
        "(default)",
        60,
    )


def test_several_secrets_and_modules() -> None:
    """Secrets and handler modules are comma-separated lists; blanks are dropped."""
    settings = Settings.from_env(
        {
            "STRIPE_WEBHOOK_SECRET": f" {SECRET} ,{SECOND_SECRET},",
            "STRIPE_HANDLER_MODULES": "app.billing, app.mail",
        }
    )
    assert settings.webhook_secrets == (SECRET, SECOND_SECRET)
    assert settings.handler_modules == ("app.billing", "app.mail")


def test_access_settings() -> None:
    """The access documents' defaults, and a grace period added to the statuses."""
    defaults = Settings.from_env({"STRIPE_WEBHOOK_SECRET": SECRET})
    assert (defaults.app_user_key, defaults.features_key) == ("app_user_id", "features")
    assert (defaults.access_statuses, defaults.custom_claims) == (("active", "trialing"), False)
    settings = Settings.from_env(
        {
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "STRIPE_APP_USER_KEY": "firebase_uid",
            "STRIPE_ACCESS_STATUSES": "active, trialing, past_due",
            "STRIPE_CUSTOM_CLAIMS": "true",
        }
    )
    assert settings.app_user_key == "firebase_uid"
    assert settings.access_statuses == ("active", "trialing", "past_due")
    assert settings.custom_claims is True


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"STRIPE_WEBHOOK_SECRET": ""}, "unset or empty"),
        ({"STRIPE_WEBHOOK_SECRET": " , "}, "unset or empty"),
        ({"STRIPE_WEBHOOK_SECRET": "sk_test_123"}, "entry 1 is not a Stripe signing secret"),
        ({"STRIPE_WEBHOOK_SECRET": f"{SECRET},whsec_"}, "entry 2 is not a Stripe signing"),
        ({"STRIPE_WEBHOOK_TOLERANCE": "0"}, "0 would switch off replay protection"),
        ({"STRIPE_WEBHOOK_TOLERANCE": "3600"}, "between 1 and 300"),
        ({"STRIPE_WEBHOOK_TOLERANCE": "soon"}, "must be an integer"),
        ({"STRIPE_MAX_ATTEMPTS": "0"}, "at least 1"),
        ({"STRIPE_EVENT_RETENTION_DAYS": "7"}, "at least 30"),
        ({"STRIPE_LEASE_SECONDS": "0"}, "STRIPE_LEASE_SECONDS"),
        ({"STRIPE_LEASE_SECONDS": "30"}, "at least 12 x STRIPE_FIRESTORE_TIMEOUT_SECONDS"),
        ({"STRIPE_EVENTS_COLLECTION": "a/b"}, "STRIPE_EVENTS_COLLECTION"),
        ({"STRIPE_ACCESS_STATUSES": "active,pastdue"}, "names no subscription status: pastdue"),
        ({"STRIPE_CUSTOM_CLAIMS": "maybe"}, "STRIPE_CUSTOM_CLAIMS must be true or false"),
    ],
)
def test_unsafe_configuration_is_refused(environ: dict[str, str], message: str) -> None:
    """Each unsafe or malformed setting is refused with a message naming it."""
    environ = {"STRIPE_WEBHOOK_SECRET": SECRET, **environ}
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(environ)


def test_the_lease_outlives_the_longest_delivery_by_default() -> None:
    """Unset, the lease is the larger of 60 s and 12 bounded Firestore calls."""
    settings = Settings.from_env(
        {"STRIPE_WEBHOOK_SECRET": SECRET, "STRIPE_FIRESTORE_TIMEOUT_SECONDS": "10"}
    )
    assert settings.lease_seconds == 120


def test_unset_secret_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="STRIPE_WEBHOOK_SECRET is unset or empty"):
        Settings.from_env({})


def test_a_refused_secret_is_not_echoed() -> None:
    """The error for a malformed secret never contains the secret itself (it is logged)."""
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({"STRIPE_WEBHOOK_SECRET": "sk_live_very_secret_value"})
    assert "very_secret" not in str(info.value)
