"""Structured logs: one JSON object per line on stdout, as Cloud Logging reads them.

Callers pass only the fields they mean to publish (IDs, types, statuses, timings). Bodies,
signature headers and secrets are never handed to a logger, so they cannot reach a log line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any

__all__ = ["JsonFormatter", "configure", "log", "logger", "trace_fields"]

logger = logging.getLogger("stripe_ledger")

_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/(\d+))?")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


class JsonFormatter(logging.Formatter):
    """Formats a record as `{"severity", "message", "time", ...fields}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(stream: IO[str] | None = None, level: int = logging.INFO) -> None:
    """Send this package's logs to `stream` (stdout) as JSON lines; safe to call repeatedly."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    logger.handlers = [handler]
    logger.setLevel(level)
    logger.propagate = False


def log(level: int, message: str, exc_info: BaseException | None = None, **fields: Any) -> None:
    """Log `message` with `fields` as top-level JSON keys (None values are left out)."""
    published = {key: value for key, value in fields.items() if value is not None}
    logger.log(level, message, exc_info=exc_info, extra={"fields": published})


def trace_fields(
    cloud_trace: str | None, traceparent: str | None, project: str | None
) -> dict[str, str]:
    """Cloud Logging's trace keys, from `X-Cloud-Trace-Context` or else `traceparent`."""
    trace_id = span_id = None
    cloud = _CLOUD_TRACE.match(cloud_trace or "")
    parent = _TRACEPARENT.match((traceparent or "").strip().lower())
    if cloud:
        trace_id = cloud.group(1).lower()
        # X-Cloud-Trace-Context carries the span ID in decimal; Cloud Logging wants 16 hex digits.
        span_id = format(int(cloud.group(2)) % 2**64, "016x") if cloud.group(2) else None
    elif parent:
        trace_id, span_id = parent.group(1), parent.group(2)
    if not trace_id:
        return {}
    fields = {
        "logging.googleapis.com/trace": (
            f"projects/{project}/traces/{trace_id}" if project else trace_id
        )
    }
    if span_id:
        fields["logging.googleapis.com/spanId"] = span_id
    return fields
