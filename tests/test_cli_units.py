"""The operations tool's pure parts, without Firestore: time windows, settings without a
signing secret, the Stripe API retry policy (against the local fake, sleeping nowhere), and
`send`'s payload rewriting."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stripe_ledger.config import Settings
from stripe_ledger.errors import ConfigurationError
from stripe_ledger.operation_errors import OperationFailed, UsageError
from stripe_ledger.operations import parse_since
from stripe_ledger.reconcile import check_window
from stripe_ledger.stripe_api import ApiRetry, StripeApi, client_from_env
from stripe_ledger.webhook_sender import new_event_id, post_signed, read_payload
from tests.fake_stripe import FakeStripe
from tests.support import SECRET, make_event

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)


class TestSince:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("30m", NOW - timedelta(minutes=30)),
            ("12h", NOW - timedelta(hours=12)),
            ("3d", NOW - timedelta(days=3)),
            ("2w", NOW - timedelta(weeks=2)),
            ("2025-06-01", datetime(2025, 6, 1, tzinfo=UTC)),
            ("2025-06-01T08:30:00Z", datetime(2025, 6, 1, 8, 30, tzinfo=UTC)),
            ("2025-06-01T10:30:00+02:00", datetime(2025, 6, 1, 8, 30, tzinfo=UTC)),
        ],
    )
    def test_durations_and_iso_times(self, text: str, expected: datetime) -> None:
        """Durations count back from now; ISO times without an offset are UTC."""
        assert parse_since(text, NOW) == expected

    @pytest.mark.parametrize(
        ("text", "message"),
        [("yesterday", "neither a duration"), ("5y", "neither"), ("2025-07-01", "future")],
    )
    def test_refused(self, text: str, message: str) -> None:
        with pytest.raises(UsageError, match=message):
            parse_since(text, NOW)

    def test_reconcile_refuses_more_than_30_days(self) -> None:
        """Stripe keeps events for 30 days: a wider window could not be listed in full."""
        check_window(NOW - timedelta(days=30), NOW)
        with pytest.raises(UsageError, match="more than 30 days ago"):
            check_window(NOW - timedelta(days=30, seconds=1), NOW)


class TestSettingsWithoutSecret:
    def test_the_tool_needs_no_signing_secret(self) -> None:
        """`require_secret=False` accepts an unset secret; the function's default refuses it."""
        assert Settings.from_env({}, require_secret=False).webhook_secrets == ()
        with pytest.raises(ConfigurationError, match="unset or empty"):
            Settings.from_env({})

    def test_a_malformed_secret_is_still_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="not a Stripe signing secret"):
            Settings.from_env({"STRIPE_WEBHOOK_SECRET": "sk_oops"}, require_secret=False)


class TestStripeApiRetries:
    def api(self, fake: FakeStripe, sleeps: list[float], retries: list[ApiRetry]) -> StripeApi:
        client = client_from_env({"STRIPE_API_KEY": fake.api_key, "STRIPE_API_BASE": fake.url})
        return StripeApi(client, max_retries=3, on_retry=retries.append, sleep=sleeps.append)

    def test_429_and_5xx_are_retried_with_growing_backoff(self) -> None:
        """429, 500 and 503 are retried, each after a longer pause (jittered exponential
        backoff), and each retry is reported."""
        sleeps: list[float] = []
        retries: list[ApiRetry] = []
        with FakeStripe() as fake:
            fake.add_event(make_event("test.counter"))
            for status in (429, 500, 503):
                fake.fail(status)
            api = self.api(fake, sleeps, retries)
            pages = list(api.list_events(created_gte=0, delivery_success=None))
        assert [len(page) for page in pages] == [1]
        assert [r.http_status for r in retries] == [429, 500, 503]
        assert [r.retry for r in retries] == [1, 2, 3]
        assert 0.25 <= sleeps[0] <= 0.5
        assert 0.5 <= sleeps[1] <= 1.0
        assert 1.0 <= sleeps[2] <= 2.0
        assert len(fake.requests_to("/v1/events")) == 4

    def test_retry_after_is_honoured(self) -> None:
        """A `Retry-After` longer than the backoff is waited for."""
        sleeps: list[float] = []
        with FakeStripe() as fake:
            fake.fail(429, headers={"Retry-After": "7"})
            list(self.api(fake, sleeps, []).list_events(created_gte=0, delivery_success=None))
        assert sleeps == [7.0]

    def test_spent_retries_fail_with_the_last_error(self) -> None:
        sleeps: list[float] = []
        with FakeStripe() as fake:
            fake.fail(500, times=10)
            with pytest.raises(OperationFailed, match=r"failed after 3 retries: HTTP 500"):
                list(self.api(fake, sleeps, []).list_events(created_gte=0, delivery_success=None))
        assert len(sleeps) == 3

    @pytest.mark.parametrize(
        ("status", "headers", "error", "message"),
        [
            (400, {}, OperationFailed, "HTTP 400"),
            (500, {"Stripe-Should-Retry": "false"}, OperationFailed, "HTTP 500"),
            (401, {}, ConfigurationError, "Stripe refused STRIPE_API_KEY"),
            (403, {}, ConfigurationError, "STRIPE_API_KEY may not list events"),
        ],
    )
    def test_not_retried(
        self, status: int, headers: dict[str, str], error: type[Exception], message: str
    ) -> None:
        """Client errors, and what Stripe says not to retry, fail at once."""
        sleeps: list[float] = []
        with FakeStripe() as fake:
            fake.fail(status, headers=headers)
            with pytest.raises(error, match=message):
                list(self.api(fake, sleeps, []).list_events(created_gte=0, delivery_success=None))
        assert sleeps == []

    @pytest.mark.parametrize(
        ("environ", "message"),
        [({}, "STRIPE_API_KEY is unset"), ({"STRIPE_API_KEY": "pk_test_1"}, "not a Stripe secret")],
    )
    def test_the_key_is_required(self, environ: dict[str, str], message: str) -> None:
        with pytest.raises(ConfigurationError, match=message):
            client_from_env(environ)


class TestSendPayload:
    def test_the_file_is_sent_as_it_is(self, tmp_path: Path) -> None:
        path = tmp_path / "event.json"
        path.write_text('{"id": "evt_1",  "odd":   "spacing"}')
        assert read_payload(path, new_id=False, now=NOW) == path.read_text()

    def test_new_id_gives_a_fresh_id_and_created_now(self, tmp_path: Path) -> None:
        path = tmp_path / "event.json"
        path.write_text(json.dumps(make_event("test.counter", event_id="evt_old", created=1)))
        sent = json.loads(read_payload(path, new_id=True, now=NOW))
        assert sent["id"].startswith("evt_")
        assert sent["id"] != "evt_old"
        assert sent["created"] == int(NOW.timestamp())
        assert new_event_id() != new_event_id()

    @pytest.mark.parametrize(
        ("url", "secret", "message"),
        [
            ("http://localhost:9/", "sk_test_1", "not a Stripe signing secret"),
            ("ftp://example.com/", SECRET, "not an http"),
        ],
    )
    def test_bad_secret_or_url(self, url: str, secret: str, message: str) -> None:
        with pytest.raises(UsageError, match=message):
            post_signed("{}", url=url, secret=secret)

    def test_unreachable_url(self) -> None:
        from stripe_ledger.emulator import free_port

        with pytest.raises(OperationFailed, match="could not reach"):
            post_signed("{}", url=f"http://127.0.0.1:{free_port()}/", secret=SECRET)
