"""Hostile input, generated: whatever arrives, the function answers with a documented status,
writes nothing unless the signature is valid, and never logs an unhandled exception."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from google.cloud import firestore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stripe_ledger.config import Settings
from tests.support import (
    SECRET,
    UNKNOWN_SECRET,
    FunctionServer,
    builtin_projections,
    make_event,
    new_event_id,
    sign,
)

pytestmark = [pytest.mark.emulator, pytest.mark.e2e, pytest.mark.reliability]

EXAMPLES = 2000
DOCUMENTED = {200, 400, 405, 409, 413, 503}
PROJECTIONS = [p.collection for p in builtin_projections()]


@dataclass
class Request:
    """One generated request, and whether it carries a valid signature over an event."""

    method: str
    body: bytes
    headers: dict[str, str]
    kind: str
    signed_event_id: str | None = None


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    signed: set[str] = field(default_factory=set)


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for level in range(depth):
        value = {f"l{level}": value}
    return value


EVENT_TYPES = st.sampled_from(
    ["payment_intent.succeeded", "customer.updated", "invoice.paid", "test.counter", "x.y"]
)
HEADER_NAMES = st.sampled_from(
    ["Stripe-Signature", "Content-Type", "X-Forwarded-For", "Content-Encoding", "X-Junk"]
)
HEADER_VALUES = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80).map(
    lambda value: value.strip() or "x"  # HTTP clients refuse values with edge whitespace
)


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """Well-formed events, some with huge or deeply nested objects."""
    event_type = draw(EVENT_TYPES)
    obj: dict[str, Any] = {"id": f"obj_{draw(st.integers(0, 50))}", "object": "thing"}
    shape = draw(st.sampled_from(["plain", "plain", "plain", "huge", "deep", "wide"]))
    if shape == "huge":
        obj["blob"] = "x" * draw(st.integers(100_000, 900_000))
    elif shape == "deep":
        obj["nested"] = _nested(draw(st.integers(10, 200)))
    elif shape == "wide":
        obj["metadata"] = {f"k{n}": "v" for n in range(draw(st.integers(100, 3000)))}
    return make_event(event_type, obj)


@st.composite
def requests_(draw: st.DrawFn) -> Request:
    kind = draw(
        st.sampled_from(
            [
                "random_bytes",
                "non_utf8",
                "oversized",
                "truncated",
                "mangled_signature",
                "signed_garbage",
                "replayed",
                "unknown_secret",
                "forbidden_id",
                "valid",
                "other_method",
            ]
        )
    )
    headers = draw(st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=3))
    method = "POST"
    signed_event_id = None
    if kind == "random_bytes":
        body = draw(st.binary(max_size=2000))
    elif kind == "non_utf8":
        body = b"\xff\xfe" + draw(st.binary(max_size=200))
        headers["Stripe-Signature"] = sign(body.decode("latin-1"))
    elif kind == "oversized":
        body = b"{" + b" " * (1024 * 1024 + draw(st.integers(1, 5000))) + b"}"
        headers["Stripe-Signature"] = "t=1,v1=00"
    elif kind == "truncated":
        payload = json.dumps(draw(valid_events()))
        body = payload[: draw(st.integers(0, len(payload) - 1))].encode()
        headers["Stripe-Signature"] = sign(body.decode("utf-8", "ignore"))
    elif kind == "mangled_signature":
        payload = json.dumps(draw(valid_events()))
        body = payload.encode()
        header = sign(payload)
        # (Repeating a valid v1 signature is not a mangling: Stripe sends several during a
        # secret rotation, and one match suffices.)
        mangle = draw(st.sampled_from(["flip", "drop_t", "drop_v1", "spaces", "case"]))
        headers["Stripe-Signature"] = {
            "flip": header[:-1] + ("0" if header[-1] != "0" else "1"),
            "drop_t": header.split(",", 1)[1],
            "drop_v1": header.split(",", 1)[0],
            "spaces": header.replace(",", " , "),
            "case": header.upper(),
        }[mangle]
    elif kind == "signed_garbage":
        text = draw(st.text(max_size=300))
        body = text.encode()
        headers["Stripe-Signature"] = sign(text)
    elif kind == "replayed":
        payload = json.dumps(draw(valid_events()))
        body = payload.encode()
        age = draw(st.integers(301, 10**7))
        headers["Stripe-Signature"] = sign(payload, timestamp=int(time.time()) - age)
    elif kind == "unknown_secret":
        payload = json.dumps(draw(valid_events()))
        body = payload.encode()
        headers["Stripe-Signature"] = sign(payload, UNKNOWN_SECRET)
    elif kind == "forbidden_id":
        event = draw(valid_events())
        event["id"] = draw(
            st.sampled_from(["evt_a/b", "..", "__evt__", "evt_é", "evt_" + "x" * 2000, "", " "])
        )
        payload = json.dumps(event)
        body = payload.encode()
        headers["Stripe-Signature"] = sign(payload)
    elif kind == "valid":
        event = draw(valid_events())
        event["id"] = new_event_id()
        payload = json.dumps(event)
        body = payload.encode()
        headers["Stripe-Signature"] = sign(payload)
        headers.pop("Content-Encoding", None)
        signed_event_id = event["id"]
    else:  # other_method
        method = draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS"]))
        body = draw(st.binary(max_size=200))
    if kind != "valid" and headers.get("Content-Encoding"):
        headers["Content-Encoding"] = "identity"
    return Request(method, body, headers, kind, signed_event_id)


@pytest.fixture
def server(project: str) -> Iterator[FunctionServer]:
    function = FunctionServer(
        {
            "GOOGLE_CLOUD_PROJECT": project,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "STRIPE_HANDLER_MODULES": "tests.handlers_for_tests",
        },
        threads=4,
    ).start()
    yield function
    function.stop()


def test_generated_requests_are_answered_as_documented(
    server: FunctionServer, db: firestore.Client, report: Callable[[str], None]
) -> None:
    """At least 2,000 generated requests: random methods, headers, truncated, oversized and
    non-UTF-8 bodies, mangled signatures, valid signatures over garbage, replayed timestamps,
    huge and deeply nested events, IDs Firestore forbids. Every answer is a documented
    status (no 5xx but 503), no document exists that a validly signed event did not cause,
    and no unhandled exception reaches the logs."""
    tally = Tally()
    session = requests.Session()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(requests_())
    def probe(request: Request) -> None:
        response = session.request(
            request.method, server.url, data=request.body, headers=request.headers, timeout=30
        )
        tally.statuses[response.status_code] += 1
        tally.kinds[request.kind] += 1
        assert response.status_code in DOCUMENTED, (request.kind, response.text)
        if request.signed_event_id:
            tally.signed.add(request.signed_event_id)
            assert response.status_code == 200, (request.kind, response.text)
        elif request.method == "POST":
            assert response.status_code in (400, 413), (request.kind, response.text)

    probe()
    assert sum(tally.statuses.values()) >= EXAMPLES
    assert len(tally.kinds) == 11, tally.kinds

    recorded = {doc.id for doc in db.collection(Settings.events_collection).stream()}
    assert recorded == tally.signed
    for collection in PROJECTIONS:
        for doc in db.collection(collection).stream():
            assert doc.get("last_event_id") in tally.signed, (collection, doc.id)
    for doc in db.collection("test_effects").stream():
        assert doc.id in tally.signed

    log = server.log_text()
    assert "Traceback" not in log
    for entry in server.log_entries():
        assert "stack_trace" not in entry, entry["message"]
        assert entry["message"] != "unexpected error while handling a delivery"
    report(
        f"hostile: {sum(tally.statuses.values())} generated requests, statuses "
        f"{dict(sorted(tally.statuses.items()))}, {len(tally.signed)} validly signed events "
        f"recorded and nothing else"
    )
