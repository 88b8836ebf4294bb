"""Sign a payload as Stripe does and POST it to a webhook function: the developer's tool.

The `Stripe-Signature` header is computed by `stripe.WebhookSignature` over the exact bytes
sent, with the current time, so the function verifies it like a real delivery.
"""

from __future__ import annotations

import json
import secrets
import string
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import stripe

from stripe_ledger.operation_errors import OperationFailed, UsageError

__all__ = ["DEFAULT_URL", "LOCAL_SECRET", "Sent", "new_event_id", "post_signed", "read_payload"]

DEFAULT_URL = "http://localhost:8080/"
"""Where `make run` serves the function."""

LOCAL_SECRET = "whsec_local_development_only"  # noqa: S105 - public, for local use only
"""The signing secret `make run` configures when STRIPE_WEBHOOK_SECRET is unset."""

_ID_ALPHABET = string.ascii_letters + string.digits


def new_event_id() -> str:
    """A fresh event ID shaped like Stripe's (`evt_` and 24 letters or digits)."""
    return "evt_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def read_payload(path: Path, *, new_id: bool, now: datetime) -> str:
    """The body to send: the file as it is, or with a fresh `id` and `created` = `now`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read {path}: {error}") from None
    if not new_id:
        return text
    try:
        event: Any = json.loads(text)
    except ValueError:
        raise UsageError(f"{path} is not JSON, so --new-id cannot rewrite it") from None
    if not isinstance(event, dict):
        raise UsageError(f"{path} is not a JSON object, so --new-id cannot rewrite it")
    event["id"] = new_event_id()
    event["created"] = int(now.timestamp())
    return json.dumps(event, indent=2) + "\n"


@dataclass(frozen=True)
class Sent:
    """The function's answer."""

    http_status: int
    body: str

    @property
    def ok(self) -> bool:
        return 200 <= self.http_status < 300


def post_signed(payload: str, *, url: str, secret: str, timeout: float = 30) -> Sent:
    """POST `payload` with a `Stripe-Signature` for `secret`; the function's answer."""
    if not secret.startswith("whsec_") or len(secret) <= len("whsec_"):
        raise UsageError("--secret is not a Stripe signing secret (it must start with whsec_)")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--url {url!r} is not an http:// or https:// URL")
    signature = stripe.WebhookSignature.generate_signature_header(payload, secret)
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url,
        data=payload.encode("utf-8"),
        method="POST",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": signature,
            "User-Agent": "stripe-ledger send",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return Sent(response.status, response.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as error:
        return Sent(error.code, error.read().decode("utf-8", "replace"))
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise OperationFailed(f"could not reach {url}: {reason}") from None
