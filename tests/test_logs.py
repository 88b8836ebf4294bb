"""Structured logs: JSON lines with Cloud Logging's keys."""

from __future__ import annotations

import io
import json
import logging

from stripe_ledger import logs


def test_a_log_line_is_one_json_object_with_the_fields() -> None:
    stream = io.StringIO()
    logs.configure(stream)
    logs.log(logging.WARNING, "hello", event_id="evt_1", attempt=2, ignored=None)
    entry = json.loads(stream.getvalue())
    assert entry["severity"] == "WARNING"
    assert entry["message"] == "hello"
    assert (entry["event_id"], entry["attempt"]) == ("evt_1", 2)
    assert "ignored" not in entry


def test_exceptions_are_logged_with_their_stack() -> None:
    stream = io.StringIO()
    logs.configure(stream)
    try:
        raise KeyError("k")
    except KeyError as error:
        logs.log(logging.ERROR, "failed", exc_info=error)
    entry = json.loads(stream.getvalue())
    assert "KeyError" in entry["stack_trace"]


class TestTrace:
    def test_cloud_trace_context(self) -> None:
        """X-Cloud-Trace-Context gives the trace, and its decimal span ID in hex."""
        fields = logs.trace_fields("0123456789abcdef0123456789abcdef/255;o=1", None, "proj")
        assert fields == {
            "logging.googleapis.com/trace": "projects/proj/traces/0123456789abcdef0123456789abcdef",
            "logging.googleapis.com/spanId": "00000000000000ff",
        }

    def test_traceparent(self) -> None:
        header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        fields = logs.trace_fields(None, header, "proj")
        assert fields["logging.googleapis.com/trace"].endswith("0af7651916cd43dd8448eb211c80319c")
        assert fields["logging.googleapis.com/spanId"] == "b7ad6b7169203331"

    def test_no_or_malformed_headers(self) -> None:
        assert logs.trace_fields(None, None, "proj") == {}
        assert logs.trace_fields("nonsense", "00-zz", "proj") == {}
