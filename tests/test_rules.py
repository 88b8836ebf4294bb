"""firestore.rules locks every client out, and the function keeps working behind it.

An emulator of its own is started with `--rules=firestore.rules` (it enforces the rules for
every request that does not carry the admin token `Bearer owner`, which is what the Python
client sends, as the function's service account bypasses rules in production). Requests go
over the REST API exactly as a web or mobile client's would: without credentials, and with a
forged end-user ID token claiming to be an admin.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from google.cloud import firestore
from test_utils.system import EmulatorCreds

from stripe_ledger.emulator import Emulator
from tests.support import ROOT, SECRET, FunctionServer, builtin_projections, make_event

pytestmark = pytest.mark.emulator

RULES = ROOT / "firestore.rules"
PROJECTIONS = sorted(p.collection for p in builtin_projections())
COLLECTIONS = ["stripe_events", *PROJECTIONS, "stripe_tasks"]
DOCUMENT = {"fields": {"status": {"stringValue": "completed"}}}


def deny_line() -> int:
    """The line of firestore.rules whose `if false` refuses everything."""
    lines = RULES.read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if "allow read, write: if false" in line)


def forged_token(project: str, uid: str = "attacker", *, admin: bool = True) -> str:
    """An unsigned end-user ID token for `uid`, as an attacker would make one, claiming
    admin (the emulator accepts unsigned tokens: it is how it is given a signed-in user)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {
        "iss": f"https://securetoken.google.com/{project}",
        "aud": project,
        "sub": uid,
        "user_id": uid,
        "iat": now,
        "auth_time": now,
        "exp": now + 3600,
        "email": "attacker@example.com",
        "email_verified": True,
        "admin": admin,
        "firebase": {"sign_in_provider": "password", "identities": {}},
    }
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.fixture(scope="module")
def rules_host() -> Iterator[str]:
    """An emulator enforcing firestore.rules (its own: rules apply to the whole emulator)."""
    emulator = Emulator(rules=RULES)
    emulator.start()
    try:
        yield emulator.host
    finally:
        emulator.stop()


@pytest.fixture
def project() -> str:
    return f"rules-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def admin(rules_host: str, project: str, monkeypatch: pytest.MonkeyPatch) -> firestore.Client:
    """The Python client (admin token) on the rules emulator, with one document seeded in
    every collection."""
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", rules_host)
    db = firestore.Client(project=project, credentials=EmulatorCreds())
    batch = db.batch()
    for collection in COLLECTIONS:
        batch.set(db.collection(collection).document("seeded"), {"status": "completed"})
    batch.commit()
    return db


class Client:
    """REST calls of one kind of caller to the emulator's Firestore API."""

    def __init__(self, host: str, project: str, token: str | None) -> None:
        self.base = f"http://{host}/v1/projects/{project}/databases/(default)/documents"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, operation: str, collection: str) -> requests.Response:
        url, doc = f"{self.base}/{collection}", f"{self.base}/{collection}/seeded"
        calls = {
            "get": ("GET", doc, None),
            "list": ("GET", url, None),
            "query": (
                "POST",
                f"{self.base}:runQuery",
                {"structuredQuery": {"from": [{"collectionId": collection}]}},
            ),
            "create": ("POST", f"{url}?documentId={uuid.uuid4().hex}", DOCUMENT),
            "update": ("PATCH", doc, DOCUMENT),
            "delete": ("DELETE", doc, None),
        }
        method, target, body = calls[operation]
        return requests.request(method, target, json=body, headers=self.headers, timeout=30)


CALLERS = ["unauthenticated", "forged end-user token"]
OPERATIONS = ["get", "list", "query", "create", "update", "delete"]


def client_for(caller: str, host: str, project: str) -> Client:
    token = forged_token(project) if caller == "forged end-user token" else None
    return Client(host, project, token)


class TestClientsAreRefused:
    @pytest.mark.parametrize("caller", CALLERS)
    @pytest.mark.parametrize("operation", OPERATIONS)
    def test_every_collection_refuses(
        self, admin: firestore.Client, rules_host: str, project: str, caller: str, operation: str
    ) -> None:
        """On the ledger, every projection and the outbox, this caller's reads and writes
        are refused by firestore.rules' deny rule (403 naming its line), and change nothing."""
        client = client_for(caller, rules_host, project)
        for collection in COLLECTIONS:
            response = client.call(operation, collection)
            assert response.status_code == 403, (collection, response.text)
            error = response.json()
            if isinstance(error, list):  # runQuery answers with a list
                error = error[0]
            assert error["error"]["status"] == "PERMISSION_DENIED"
            assert f"@ L{deny_line()}" in error["error"]["message"], error
        for collection in COLLECTIONS:
            documents = list(admin.collection(collection).stream())
            assert [d.id for d in documents] == ["seeded"], collection
            assert documents[0].to_dict() == {"status": "completed"}

    def test_the_admin_token_bypasses_the_rules(
        self, admin: firestore.Client, rules_host: str, project: str
    ) -> None:
        """The same request with `Bearer owner` (the server client's token) is served: the
        refusals above come from the rules, not from missing documents."""
        client = Client(rules_host, project, "owner")
        for collection in COLLECTIONS:
            response = client.call("get", collection)
            assert response.status_code == 200, (collection, response.text)


class TestFunctionBehindTheRules:
    def test_a_delivery_is_recorded_and_projected_but_unreadable_by_clients(
        self, admin: firestore.Client, rules_host: str, project: str
    ) -> None:
        """The function, served by functions-framework against the rules emulator, records
        and projects a payment; clients can read neither the ledger record nor the payment."""
        intent: dict[str, Any] = {"id": f"pi_{uuid.uuid4().hex[:14]}", "object": "payment_intent"}
        intent |= {"status": "succeeded", "amount": 1000, "currency": "eur"}
        event = make_event("payment_intent.succeeded", intent)
        server = FunctionServer(
            {
                "FIRESTORE_EMULATOR_HOST": rules_host,
                "GOOGLE_CLOUD_PROJECT": project,
                "STRIPE_WEBHOOK_SECRET": SECRET,
            },
            threads=2,
        ).start()
        try:
            response = server.post(event)
        finally:
            server.stop()
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "completed", "event_id": event["id"]}
        record = admin.collection("stripe_events").document(event["id"]).get().to_dict()
        assert record is not None
        assert record["status"] == "completed"
        payment = admin.collection("payments").document(intent["id"]).get().to_dict()
        assert payment is not None
        assert payment["status"] == "succeeded"
        for caller in CALLERS:
            client = client_for(caller, rules_host, project)
            for path in (f"stripe_events/{event['id']}", f"payments/{intent['id']}"):
                response = requests.get(f"{client.base}/{path}", headers=client.headers, timeout=30)
                assert response.status_code == 403, (caller, path, response.text)


class TestUserAccessIsReadableByItsUser:
    """`user_access/{uid}`: its signed-in user may read it, nobody else, and no client
    writes it; `customer_access` stays the function's."""

    @pytest.fixture
    def seeded(self, admin: firestore.Client) -> firestore.Client:
        for user in ("alice", "bob"):
            admin.collection("user_access").document(user).set({"active": True})
        admin.collection("customer_access").document("cus_alice").set({"app_user_id": "alice"})
        return admin

    def _get(self, host: str, project: str, token: str | None, path: str) -> requests.Response:
        client = Client(host, project, token)
        return requests.get(f"{client.base}/{path}", headers=client.headers, timeout=30)

    def test_a_user_reads_its_own_document(
        self, seeded: firestore.Client, rules_host: str, project: str
    ) -> None:
        token = forged_token(project, "alice", admin=False)
        response = self._get(rules_host, project, token, "user_access/alice")
        assert response.status_code == 200, response.text
        assert response.json()["fields"]["active"] == {"booleanValue": True}

    def test_everything_else_is_refused(
        self, seeded: firestore.Client, rules_host: str, project: str
    ) -> None:
        """Another user's document, unauthenticated, listing, writing one's own, the
        customer documents and every other collection: 403."""
        alice = forged_token(project, "alice", admin=False)
        refused = [
            (alice, "GET", "user_access/bob", None),
            (None, "GET", "user_access/alice", None),
            (alice, "GET", "user_access", None),
            (alice, "PATCH", "user_access/alice", DOCUMENT),
            (alice, "DELETE", "user_access/alice", None),
            (alice, "POST", "user_access?documentId=carol", DOCUMENT),
            (alice, "GET", "customer_access/cus_alice", None),
            *((alice, "GET", f"{collection}/seeded", None) for collection in COLLECTIONS),
        ]
        for token, method, path, body in refused:
            client = Client(rules_host, project, token)
            response = requests.request(
                method, f"{client.base}/{path}", json=body, headers=client.headers, timeout=30
            )
            assert response.status_code == 403, (method, path, token is None, response.text)
        query = {"structuredQuery": {"from": [{"collectionId": "user_access"}]}}
        response = requests.post(
            f"{Client(rules_host, project, alice).base}:runQuery",
            json=query,
            headers={"Authorization": f"Bearer {alice}"},
            timeout=30,
        )
        assert response.status_code == 403, response.text
        assert seeded.collection("user_access").document("alice").get().to_dict() == {
            "active": True
        }
        assert not seeded.collection("user_access").document("carol").get().exists
