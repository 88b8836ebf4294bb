"""Signature verification and event parsing, without Firestore."""

from __future__ import annotations

import json
import time

import pytest

from stripe_ledger.errors import InvalidEvent, SignatureError
from stripe_ledger.verify import parse_event, verify_signature
from tests.support import SECOND_SECRET, SECRET, UNKNOWN_SECRET, make_event, sign

SECRETS = (SECRET, SECOND_SECRET)


def _body(**overrides: object) -> str:
    return json.dumps(make_event("customer.updated", **overrides))  # type: ignore[arg-type]


class TestSignature:
    def test_valid_signature_returns_the_text(self) -> None:
        """A body signed with a configured secret verifies and comes back as text."""
        body = _body()
        assert verify_signature(body.encode(), sign(body), SECRETS, 300).text == body

    def test_either_of_two_secrets_verifies(self) -> None:
        """During rotation, a delivery signed with either configured secret is accepted."""
        body = _body()
        signed = verify_signature(body.encode(), sign(body, SECOND_SECRET), SECRETS, 300)
        assert (signed.text, signed.secret) == (body, SECOND_SECRET)

    def test_missing_header(self) -> None:
        """No Stripe-Signature header is refused as missing."""
        with pytest.raises(SignatureError, match="missing Stripe-Signature") as info:
            verify_signature(b"{}", None, SECRETS, 300)
        assert info.value.reason == "missing"

    def test_empty_header(self) -> None:
        """An empty header counts as missing."""
        with pytest.raises(SignatureError, match="missing") as info:
            verify_signature(b"{}", "", SECRETS, 300)
        assert info.value.reason == "missing"

    @pytest.mark.parametrize(
        "header", ["garbage", "t=notanumber,v1=abc", "v1=abc", "t=123", "t=,v1=", ",,,"]
    )
    def test_unparseable_header(self, header: str) -> None:
        """A header without a timestamp and a v1 signature is refused as invalid."""
        with pytest.raises(SignatureError, match="signature verification failed") as info:
            verify_signature(b"{}", header, SECRETS, 300)
        assert info.value.reason == "invalid"

    def test_signed_with_an_unknown_secret(self) -> None:
        """A signature made with a secret we do not hold matches nothing."""
        body = _body()
        with pytest.raises(SignatureError, match="No signatures found matching"):
            verify_signature(body.encode(), sign(body, UNKNOWN_SECRET), SECRETS, 300)

    def test_tampered_body(self) -> None:
        """A body changed after signing no longer matches its signature."""
        body = _body()
        header = sign(body)
        with pytest.raises(SignatureError, match="No signatures found matching"):
            verify_signature(body.replace("customer", "kustomer").encode(), header, SECRETS, 300)

    def test_stale_timestamp(self) -> None:
        """A correct signature older than the tolerance is refused as stale (a replay)."""
        body = _body()
        header = sign(body, timestamp=int(time.time()) - 301)
        with pytest.raises(SignatureError, match="older than 300 s") as info:
            verify_signature(body.encode(), header, SECRETS, 300)
        assert info.value.reason == "stale"

    def test_non_utf8_body(self) -> None:
        """A body that is not UTF-8 cannot carry a Stripe signature."""
        with pytest.raises(SignatureError, match="not UTF-8"):
            verify_signature(b"\xff\xfe{}", "t=1,v1=00", SECRETS, 300)


class TestParse:
    def test_event_fields(self) -> None:
        """A Stripe event is parsed with its ID, type, object and Connect account."""
        event = make_event(
            "payment_intent.succeeded", {"id": "pi_1", "amount": 5}, account="acct_1"
        )
        parsed = parse_event(json.dumps(event))
        assert (parsed.id, parsed.type, parsed.object_id, parsed.account) == (
            event["id"],
            "payment_intent.succeeded",
            "pi_1",
            "acct_1",
        )
        assert parsed.event.data.object.amount == 5

    def test_object_without_id(self) -> None:
        """invoice.upcoming has no object ID: parsed, with object_id None."""
        parsed = parse_event(json.dumps(make_event("invoice.upcoming", {"object": "invoice"})))
        assert parsed.object_id is None

    def test_not_json(self) -> None:
        with pytest.raises(InvalidEvent, match="not JSON"):
            parse_event("this is not json")

    @pytest.mark.parametrize("body", ["[]", '"text"', "42", "null"])
    def test_not_an_object(self, body: str) -> None:
        with pytest.raises(InvalidEvent, match="not a JSON object"):
            parse_event(body)

    @pytest.mark.parametrize("event_id", [None, "", 7, "evt_a/b", "evt_..", "__evt__", "cus_123"])
    def test_invalid_id(self, event_id: object) -> None:
        """IDs that are not Stripe event IDs (or unsafe as document IDs) are refused."""
        with pytest.raises(InvalidEvent, match="no valid id"):
            parse_event(json.dumps(make_event("x.y", event_id="evt_x") | {"id": event_id}))

    def test_deeply_nested_body(self) -> None:
        """A body nested deeper than the parser can follow is refused, not a crash."""
        with pytest.raises(InvalidEvent, match="nested too deeply"):
            parse_event("[" * 100_000 + "]" * 100_000)

    def test_missing_type(self) -> None:
        event = make_event("x.y")
        del event["type"]
        with pytest.raises(InvalidEvent, match="no valid type"):
            parse_event(json.dumps(event))

    @pytest.mark.parametrize("data", [None, {}, {"object": None}, {"object": []}, "x"])
    def test_missing_data_object(self, data: object) -> None:
        event = make_event("x.y") | {"data": data}
        with pytest.raises(InvalidEvent, match=r"no data\.object"):
            parse_event(json.dumps(event))

    @pytest.mark.parametrize("created", [None, "yesterday", -1, True, 10**20])
    def test_invalid_created(self, created: object) -> None:
        with pytest.raises(InvalidEvent, match="created"):
            parse_event(json.dumps(make_event("x.y") | {"created": created}))


def test_the_signature_is_checked_before_anything_is_parsed() -> None:
    """A body that is not JSON is refused for its signature when unsigned; only a signed one
    reaches the parser, which refuses it as not JSON."""
    with pytest.raises(SignatureError):
        verify_signature(b"not json", sign("something else"), SECRETS, 300)
    signed = verify_signature(b"not json", sign("not json"), SECRETS, 300)
    with pytest.raises(InvalidEvent):
        parse_event(signed.text)
