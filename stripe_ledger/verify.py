"""Verify a delivery's signature on the raw body, then parse it into a `VerifiedEvent`.

Nothing is parsed before the signature matches one of the configured secrets, so an
unsigned body never reaches the JSON parser, the ledger or a log line. `parse_event` reads a
verified (or otherwise trusted: stored, or from Stripe's API) body of either kind, a snapshot
event or a thin event notification; every door reads events with it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import stripe

from stripe_ledger.errors import InvalidEvent, SignatureError

__all__ = [
    "THIN_OBJECT",
    "Signed",
    "VerifiedEvent",
    "check_event_id",
    "check_notification",
    "event_from",
    "is_thin",
    "load_json",
    "parse_event",
    "thin_event_from",
    "verify_signature",
]

THIN_OBJECT = "v2.core.event"
"""The `object` of a thin event notification."""

# Stripe event IDs are "evt_" and letters, digits or underscores. Checking the shape also keeps
# characters Firestore forbids in document IDs ("/", "__x__", "..") out of the ledger's keys.
_EVENT_ID = re.compile(r"^evt_[A-Za-z0-9_]{1,250}$")
_EVENT_TYPE = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")
_MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z, the last second a timestamp can hold


@dataclass(frozen=True)
class VerifiedEvent:
    """A Stripe event whose signature matched, with the body exactly as received."""

    data: dict[str, Any]
    payload: str
    observed_at: float | None = None
    """When `data.object` was read from Stripe's API, if it was (thin events, refetch mode):
    the object then holds its state at that moment, later than the event's `created`."""
    settleable: bool = False
    """Whether a same-second conflict over this event's object may be settled by reading the
    object from Stripe's API (the pipeline holds a key that can read it)."""
    settles: str | None = None
    """For a state read to settle a same-second conflict: the event whose stored state it was
    read after, which it therefore replaces."""

    @property
    def state_time(self) -> float:
        """The moment `data.object`'s state is from: `observed_at`, else the event's `created`."""
        return self.observed_at if self.observed_at is not None else self.created

    def with_object(self, obj: dict[str, Any], observed_at: float) -> VerifiedEvent:
        """This event carrying `obj`, read from the API at `observed_at`, as its object."""
        data = {**self.data, "data": {**self.data["data"], "object": obj}}
        return dataclasses.replace(self, data=data, observed_at=observed_at)

    @cached_property
    def event(self) -> stripe.Event:
        """The event as a `stripe.Event`, built on first use: building one costs about 1.5 ms
        (and, on a new instance, the import of stripe's object classes), and the built-in
        handlers read `data` instead."""
        return stripe.Event.construct_from(self.data, None)

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def type(self) -> str:
        return str(self.data["type"])

    @property
    def created(self) -> int:
        return int(self.data["created"])

    @property
    def object(self) -> dict[str, Any]:
        """`data.object` as a plain dict."""
        return dict(self.data["data"]["object"])

    @property
    def object_id(self) -> str | None:
        object_id = self.data["data"]["object"].get("id")
        return object_id if isinstance(object_id, str) else None

    @property
    def livemode(self) -> bool:
        return bool(self.data.get("livemode", False))

    @property
    def api_version(self) -> str | None:
        version = self.data.get("api_version")
        return version if isinstance(version, str) else None

    @property
    def account(self) -> str | None:
        """The connected account the event belongs to (Connect), or None."""
        account = self.data.get("account")
        return account if isinstance(account, str) else None


@dataclass(frozen=True)
class Signed:
    """A body whose signature matched, as text, and the secret it matched."""

    text: str
    secret: str = field(repr=False)


def verify_signature(
    payload: bytes, header: str | None, secrets: tuple[str, ...], tolerance: int
) -> Signed:
    """Check `header` against each secret; return the body as text if one matches.

    Raises `SignatureError` with `reason` "missing" (no header), "stale" (a secret matches
    but the timestamp is older than `tolerance` seconds) or "invalid" (anything else).
    """
    if not header:
        raise SignatureError("missing Stripe-Signature header", reason="missing")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError(
            "body is not UTF-8, so no Stripe signature can match it", reason="invalid"
        ) from None
    failure = "no signature matches a configured secret"
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance=tolerance)
            return Signed(text, secret)
        except stripe.SignatureVerificationError as error:
            failure = str(error)
        try:
            # The signature alone: this tells a stale timestamp apart from a wrong secret
            # without reading stripe's error messages.
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance=None)
        except stripe.SignatureVerificationError:
            continue
        raise SignatureError(
            f"signature timestamp is older than {tolerance} s (replayed or delayed delivery)",
            reason="stale",
        )
    raise SignatureError(f"signature verification failed: {failure}", reason="invalid")


def load_json(text: str) -> dict[str, Any]:
    """The verified body as a JSON object; raise `InvalidEvent` if it is not one."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise InvalidEvent("body is nested too deeply") from None
    except ValueError:
        raise InvalidEvent("body is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidEvent("body is not a JSON object")
    return data


def check_event_id(data: Mapping[str, Any]) -> str:
    """The body's event ID; raise `InvalidEvent` unless it is Stripe-shaped (and so a safe
    document ID)."""
    event_id = data.get("id")
    if not isinstance(event_id, str) or not _EVENT_ID.match(event_id):
        raise InvalidEvent("event has no valid id (expected evt_ followed by letters or digits)")
    event_type = data.get("type")
    if not isinstance(event_type, str) or not _EVENT_TYPE.match(event_type):
        raise InvalidEvent("event has no valid type")
    return event_id


def event_from(data: dict[str, Any], payload: str) -> VerifiedEvent:
    """A snapshot event from its verified body; raise `InvalidEvent` unless we can key it."""
    check_event_id(data)
    inner = data.get("data")
    if not isinstance(inner, dict) or not isinstance(inner.get("object"), dict):
        raise InvalidEvent("event has no data.object")
    created = data.get("created")
    if not isinstance(created, int) or isinstance(created, bool) or not 0 <= created <= _MAX_TIME:
        raise InvalidEvent("event has no valid created timestamp")
    return VerifiedEvent(data=data, payload=payload)


def is_thin(data: Mapping[str, Any]) -> bool:
    """Whether a body is a thin event notification rather than a snapshot event."""
    return data.get("object") == THIN_OBJECT


def thin_event_from(data: dict[str, Any], payload: str) -> VerifiedEvent:
    """The thin event as the ledger records it: its own ID and type, its related object's ID
    as `object_id`, the body as received. Raises `InvalidEvent` for a malformed notification."""
    check_event_id(data)
    try:
        created = int(
            datetime.fromisoformat(str(data["created"]).replace("Z", "+00:00")).timestamp()
        )
    except (KeyError, ValueError, OverflowError):
        raise InvalidEvent("thin event has no valid created time") from None
    related = data.get("related_object")
    if related is not None and not (
        isinstance(related, dict) and isinstance(related.get("url"), str)
    ):
        raise InvalidEvent("thin event has a malformed related_object")
    stub = {"id": related.get("id"), "object": related.get("type")} if related else {}
    context = data.get("context")
    record = {
        "id": data["id"],
        "object": THIN_OBJECT,
        "type": data["type"],
        "created": created,
        "livemode": bool(data.get("livemode")),
        "account": context if isinstance(context, str) else None,
        "data": {"object": stub},
        "related_object": related,
    }
    return VerifiedEvent(data=record, payload=payload)


def check_notification(
    client: stripe.StripeClient, signed: Signed, header: str | None, tolerance: int
) -> None:
    """Have Stripe's own parser check and type a verified thin event notification; raise
    `InvalidEvent` if it cannot read it."""
    try:
        client.parse_event_notification(signed.text, header or "", signed.secret, tolerance)
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidEvent(
            f"thin event notification could not be read: {type(error).__name__}"
        ) from None


def parse_event(payload: str) -> VerifiedEvent:
    """Parse a verified (or otherwise trusted) body of either kind: a thin event notification
    (`thin_event_from`) or a snapshot event (`event_from`); raise `InvalidEvent`."""
    data = load_json(payload)
    return (thin_event_from if is_thin(data) else event_from)(data, payload)
