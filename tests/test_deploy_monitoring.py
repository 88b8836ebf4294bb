"""The log-based metrics count what the function really logs.

The function is served by functions-framework against the emulator and made to dead-letter
an event and to refuse signatures (missing, invalid, stale), next to deliveries that must not
count. Its JSON log lines are turned into Cloud Logging entries (Cloud Run moves `severity`
out of jsonPayload) and each metric's filter, taken from terraform/monitoring.tf, is evaluated
on them with a small interpreter of the Logging query language subset the filters use.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.deploy.terraform import configuration, literal
from tests.support import SECRET, UNKNOWN_SECRET, FunctionServer, make_event, sign

Entry = dict[str, Any]

_TOKEN = re.compile(
    r"\s*(?:(?P<open>\()|(?P<close>\))|(?P<op>AND|OR|NOT)\b|(?P<has>[\w.]+):\*|"
    r'(?P<cmp>[\w.]+)\s*=\s*(?P<value>"(?:[^"\\]|\\.)*"|[\w.-]+))'
)
_PRESENT = object()  # `field:*`, Logging's "the field exists"


class LogFilter:
    """Cloud Logging's query language, as far as these filters use it: `field=value`
    comparisons and `field:*` (present) joined by AND, OR and NOT with parentheses (NOT binds
    tightest, then OR, then AND, as in Logging)."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, Any]] = []
        position = 0
        while position < len(text.rstrip()):
            match = _TOKEN.match(text, position)
            if match is None:
                raise ValueError(f"cannot read the filter at: {text[position:]!r}")
            position = match.end()
            if match["open"] or match["close"]:
                self.tokens.append(("paren", match["open"] or match["close"]))
            elif match["op"]:
                self.tokens.append(("op", match["op"]))
            elif match["has"]:
                self.tokens.append(("cmp", (match["has"], _PRESENT)))
            else:
                value = match["value"]
                if value.startswith('"'):
                    value = re.sub(r"\\(.)", r"\1", value[1:-1])
                self.tokens.append(("cmp", (match["cmp"], value)))

    def matches(self, entry: Entry) -> bool:
        self.position = 0
        result = self._and(entry)
        assert self.position == len(self.tokens), "trailing tokens in the filter"
        return result

    def _peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _and(self, entry: Entry) -> bool:
        result = self._or(entry)
        while self._peek() == ("op", "AND"):
            self.position += 1
            result = self._or(entry) and result
        return result

    def _or(self, entry: Entry) -> bool:
        result = self._not(entry)
        while self._peek() == ("op", "OR"):
            self.position += 1
            result = self._not(entry) or result
        return result

    def _not(self, entry: Entry) -> bool:
        token = self._peek()
        assert token is not None, "filter ends too early"
        self.position += 1
        if token == ("op", "NOT"):
            return not self._not(entry)
        if token == ("paren", "("):
            result = self._and(entry)
            assert self._peek() == ("paren", ")")
            self.position += 1
            return result
        kind, (path, expected) = token
        assert kind == "cmp", token
        value: Any = entry
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if expected is _PRESENT:
            return value is not None
        return value is not None and str(value) == expected


def metric_filter(name: str) -> str:
    """A log metric's filter with the Terraform references it uses resolved to defaults."""
    config = configuration()
    text = str(config.resource(f"google_logging_metric.{name}").get("filter"))
    text = text.replace("${local.function_logs}", literal(config.locals["function_logs"]))
    for variable in ("function_name", "outbox_function_name"):
        text = text.replace(f"${{var.{variable}}}", config.default(variable))
    assert "${" not in text, text
    return text


def as_log_entries(lines: Iterator[dict[str, Any]], service: str) -> list[Entry]:
    """The function's stdout JSON lines as Cloud Logging stores them for a Cloud Run service."""
    entries = []
    for line in lines:
        payload = dict(line)
        severity = payload.pop("severity")
        entries.append(
            {
                "severity": severity,
                "jsonPayload": payload,
                "resource": {"type": "cloud_run_revision", "labels": {"service_name": service}},
            }
        )
    return entries


@pytest.fixture(scope="module")
def entries(emulator_host: str) -> list[Entry]:
    """Log entries of: one dead-lettered event, the three kinds of signature failure, and
    deliveries that must not count (completed, ignored, wrong method, signed garbage)."""
    service = configuration().default("function_name")
    project = f"monitoring-{int(time.time() * 1000)}"
    with tempfile.TemporaryDirectory() as scratch:
        fault = Path(scratch) / "fault"
        fault.touch()
        server = FunctionServer(
            {
                "GOOGLE_CLOUD_PROJECT": project,
                "STRIPE_WEBHOOK_SECRET": SECRET,
                "STRIPE_HANDLER_MODULES": "tests.handlers_for_tests",
                "STRIPE_MAX_ATTEMPTS": "1",
            },
            threads=2,
        ).start()
        try:
            dead = make_event("test.counter", {"id": "obj_dead", "fail_while_exists": str(fault)})
            assert server.post(dead).json()["status"] == "dead"
            assert server.post(make_event("test.counter")).json()["status"] == "completed"
            assert server.post(make_event("nobody.handles.this")).json()["status"] == "ignored"
            payload = json.dumps(make_event("test.counter"))
            stale = sign(payload, timestamp=int(time.time()) - 1000)
            for headers in ({}, {"Stripe-Signature": stale}):
                response = requests.post(server.url, data=payload, headers=headers, timeout=30)
                assert response.status_code == 400
            assert server.post(make_event("test.counter"), secret=UNKNOWN_SECRET).status_code == 400
            garbage = "not json"
            headers = {"Stripe-Signature": sign(garbage)}
            assert requests.post(server.url, data=garbage, headers=headers, timeout=30).ok is False
            assert requests.get(server.url, timeout=30).status_code == 405
            return as_log_entries(server.log_entries(), service)
        finally:
            server.stop()


class TestLogMetrics:
    def test_dead_lettered_metric_counts_exactly_the_dead_event(self, entries: list[Entry]) -> None:
        """The dead-letter filter matches the dead event's line and no other line."""
        log_filter = LogFilter(metric_filter("dead_lettered"))
        matched = [e for e in entries if log_filter.matches(e)]
        assert {e["jsonPayload"].get("status") for e in entries} >= {"completed", "ignored"}
        assert [e["jsonPayload"]["status"] for e in matched] == ["dead"]
        assert matched[0]["severity"] == "ERROR"
        assert matched[0]["jsonPayload"]["event_type"] == "test.counter"

    def test_signature_metric_counts_missing_invalid_and_stale(self, entries: list[Entry]) -> None:
        """The signature-failure filter matches the three refused signatures, not a wrong
        method or a validly signed body that is not an event."""
        log_filter = LogFilter(metric_filter("signature_failures"))
        matched = [e["jsonPayload"]["reason"] for e in entries if log_filter.matches(e)]
        assert sorted(matched) == ["invalid", "missing", "stale"]
        # Also refused, but not for a signature: GET (405) and a signed body that is no event.
        others = [
            e["jsonPayload"]
            for e in entries
            if e["jsonPayload"].get("status") == "rejected" and not log_filter.matches(e)
        ]
        assert {(o["http_status"], o.get("reason")) for o in others} == {(405, None), (400, None)}

    def test_deliveries_metric_counts_every_answered_request_once(
        self, entries: list[Entry]
    ) -> None:
        """The deliveries metric (the dashboard's events and deliveries) matches each
        request's one line, whatever its answer, and no other line; its labels are fields
        those lines carry."""
        log_filter = LogFilter(metric_filter("deliveries"))
        matched = [e["jsonPayload"] for e in entries if log_filter.matches(e)]
        # The 8 requests above, and the GET of FunctionServer's readiness check (405).
        statuses = sorted(m["http_status"] for m in matched)
        assert statuses == [200, 200, 200, 400, 400, 400, 400, *[405] * (len(statuses) - 7)]
        assert {m["status"] for m in matched} == {"dead", "completed", "ignored", "rejected"}
        unmatched = [e for e in entries if not log_filter.matches(e)]
        assert all("http_status" not in e["jsonPayload"] for e in unmatched)
        metric = configuration().resource("google_logging_metric.deliveries")
        assert metric.get("label_extractors") == {
            "status": "EXTRACT(jsonPayload.status)",
            "http_status": "EXTRACT(jsonPayload.http_status)",
        }

    def test_latency_metric_extracts_each_answers_duration(self, entries: list[Entry]) -> None:
        """The latency distribution reads `duration_ms` of the same lines: a number on each."""
        config = configuration()
        metric = config.resource("google_logging_metric.delivery_latency")
        assert metric.get("filter") == config.resource("google_logging_metric.deliveries").get(
            "filter"
        )
        assert metric.get("value_extractor") == "EXTRACT(jsonPayload.duration_ms)"
        (descriptor,) = metric.get("metric_descriptor")
        assert (descriptor["value_type"], descriptor["unit"]) == ("DISTRIBUTION", "ms")
        log_filter = LogFilter(metric_filter("delivery_latency"))
        durations = [e["jsonPayload"]["duration_ms"] for e in entries if log_filter.matches(e)]
        assert len(durations) >= 8
        assert all(isinstance(d, int | float) and d >= 0 for d in durations)

    def test_label_extractors_name_logged_fields(self) -> None:
        """The metrics' labels are extracted from fields the function logs."""
        config = configuration()
        dead = config.resource("google_logging_metric.dead_lettered").get("label_extractors")
        failures = config.resource("google_logging_metric.signature_failures")
        assert dead == {"event_type": "EXTRACT(jsonPayload.event_type)"}
        assert failures.get("label_extractors") == {"reason": "EXTRACT(jsonPayload.reason)"}

    def test_interpreter_precedence(self) -> None:
        """OR binds tighter than AND, as in Cloud Logging: a AND b OR c is a AND (b OR c)."""
        entry = {"a": "1", "b": "0", "c": "1"}
        assert LogFilter("a=1 AND b=1 OR c=1").matches(entry)
        assert LogFilter("a:* AND NOT d:*").matches(entry)
        assert not LogFilter("a=0 AND b=0 OR c=1").matches(entry)
        assert not LogFilter("NOT a=1").matches(entry)


class TestAlerts:
    @pytest.mark.parametrize("name", ["dead_lettered", "signature_failures"])
    def test_alert_policy_watches_its_metric(self, name: str) -> None:
        """Each alert policy thresholds its log-based metric and notifies the optional
        channels."""
        policy = configuration().resource(f"google_monitoring_alert_policy.{name}")
        (condition,) = policy.get("conditions")
        (threshold,) = condition["condition_threshold"]
        expected = f"logging.googleapis.com/user/${{google_logging_metric.{name}.name}}"
        assert f'metric.type="{expected}"' in threshold["filter"]
        assert threshold["comparison"] == "COMPARISON_GT"
        assert policy.get("notification_channels") == "${local.notification_channels}"

    def test_notification_channel_is_optional(self) -> None:
        """The e-mail channel exists only when alert_email is set."""
        config = configuration()
        channel = config.resource("google_monitoring_notification_channel.email")
        assert channel.get("count") == "${var.alert_email == null ? 0 : 1}"
        assert config.default("alert_email") is None
        assert config.default("notification_channel_ids") == []
