"""The HTTP contract, end to end: real HTTP to the function served by functions-framework
(gunicorn, several threads), against the emulator.

Each class has a project of its own, and the tests of a class that use `server` share one
function serving it (starting gunicorn is most of a test's time): they use fresh event IDs,
and every test of TestRejections still proves that nothing at all was written to the
ledger, since no test of that class writes to its project."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from google.cloud import firestore

from tests.support import (
    SECOND_SECRET,
    SECRET,
    UNKNOWN_SECRET,
    FunctionServer,
    fixture_files,
    load_fixture,
    make_event,
    sign,
)

pytestmark = [pytest.mark.emulator, pytest.mark.e2e]

MAX_ATTEMPTS = 3


def server_env(project: str, **overrides: str) -> dict[str, str]:
    return {
        "GOOGLE_CLOUD_PROJECT": project,
        "STRIPE_WEBHOOK_SECRET": f"{SECRET},{SECOND_SECRET}",
        "STRIPE_HANDLER_MODULES": "tests.handlers_for_tests",
        "STRIPE_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        **overrides,
    }


@pytest.fixture(scope="class")
def class_project(emulator_host: str) -> str:
    return f"stripe-ledger-function-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def project(class_project: str) -> str:
    """The project of the test's class (see the module), for `db` and the function alike."""
    return class_project


@pytest.fixture(scope="class")
def server(class_project: str) -> Iterator[FunctionServer]:
    function = FunctionServer(server_env(class_project)).start()
    yield function
    function.stop()


def record(db: firestore.Client, event_id: str) -> dict[str, Any] | None:
    return db.collection("stripe_events").document(event_id).get().to_dict()


def effects(db: firestore.Client, event_id: str) -> int:
    snapshot = db.collection("test_effects").document(event_id).get()
    return int(snapshot.get("count")) if snapshot.exists else 0


def nothing_written(db: firestore.Client) -> bool:
    return not list(db.collection("stripe_events").limit(1).stream())


class TestDelivery:
    def test_new_event_completes_with_its_effect(
        self, server: FunctionServer, db: firestore.Client
    ) -> None:
        event = make_event("test.counter")
        response = server.post(event)
        assert response.status_code == 200
        assert response.json() == {"status": "completed", "event_id": event["id"]}
        stored = record(db, event["id"])
        assert stored is not None
        assert (stored["status"], stored["attempts"]) == ("completed", 1)
        assert effects(db, event["id"]) == 1

    def test_either_configured_secret_verifies(
        self, server: FunctionServer, db: firestore.Client
    ) -> None:
        """With two secrets configured (rotation, or a Connect endpoint), both verify."""
        for secret in (SECRET, SECOND_SECRET):
            event = make_event("test.counter")
            assert server.post(event, secret=secret).status_code == 200
            assert effects(db, event["id"]) == 1

    def test_duplicate_runs_no_handler(self, server: FunctionServer, db: firestore.Client) -> None:
        event = make_event("test.counter")
        assert server.post(event).status_code == 200
        before = db.collection("stripe_events").document(event["id"]).get().update_time
        response = server.post(event)
        assert response.status_code == 200
        assert response.json()["status"] == "duplicate"
        assert effects(db, event["id"]) == 1
        assert db.collection("stripe_events").document(event["id"]).get().update_time == before

    @pytest.mark.parametrize("event_type", ["invoice.upcoming", "nobody.handles.this"])
    def test_objects_without_id_and_unknown_types_are_recorded(
        self, server: FunctionServer, db: firestore.Client, event_type: str
    ) -> None:
        """invoice.upcoming (whose object has no id) and a type without handlers: 200, recorded."""
        event = make_event(event_type, {"object": "invoice", "amount_due": 100})
        response = server.post(event)
        assert response.status_code == 200
        stored = record(db, event["id"])
        assert stored is not None
        assert stored["status"] == "ignored"
        assert stored["object_id"] is None

    def test_every_captured_stripe_event_is_accepted(
        self, server: FunctionServer, db: firestore.Client
    ) -> None:
        """Every real payload in tests/fixtures/stripe-events, with a fresh ID, gets a 2xx."""
        files = fixture_files()
        assert len(files) >= 120
        for path in files:
            event = load_fixture(path)
            response = server.post(event)
            assert response.ok, (path.name, response.status_code, response.text)
            stored = record(db, event["id"])
            assert stored is not None
            assert stored["status"] in ("completed", "ignored"), path.name


class TestFailures:
    def test_failing_handler_then_fixed(
        self, server: FunctionServer, db: firestore.Client, tmp_path: Path
    ) -> None:
        """A handler that raises: 500, `failed` with the error, none of its writes; once the
        fault is gone, Stripe's redelivery completes it with its effect once."""
        fault = tmp_path / "fault"
        fault.touch()
        event = make_event("test.counter", {"id": "obj_1", "fail_while_exists": str(fault)})
        response = server.post(event)
        assert response.status_code == 500
        stored = record(db, event["id"])
        assert stored is not None
        assert (stored["status"], stored["attempts"]) == ("failed", 1)
        assert stored["last_error"].startswith("RuntimeError: injected fault")
        assert effects(db, event["id"]) == 0

        fault.unlink()
        assert server.post(event).status_code == 200
        stored = record(db, event["id"])
        assert stored is not None
        assert (stored["status"], stored["attempts"]) == ("completed", 2)
        assert effects(db, event["id"]) == 1

    def test_dead_lettered_on_the_last_attempt(
        self, server: FunctionServer, db: firestore.Client, tmp_path: Path
    ) -> None:
        """The failure on attempt STRIPE_MAX_ATTEMPTS answers 200 (Stripe stops), is `dead`,
        and an ERROR line says so."""
        fault = tmp_path / "fault"
        fault.touch()
        event = make_event("test.counter", {"id": "obj_1", "fail_while_exists": str(fault)})
        statuses = [server.post(event).status_code for _ in range(MAX_ATTEMPTS + 1)]
        assert statuses == [500] * (MAX_ATTEMPTS - 1) + [200, 200]
        stored = record(db, event["id"])
        assert stored is not None
        assert (stored["status"], stored["attempts"]) == ("dead", MAX_ATTEMPTS)
        assert effects(db, event["id"]) == 0
        dead_lines = [
            entry
            for entry in server.log_entries()
            if entry.get("event_id") == event["id"] and entry.get("status") == "dead"
        ]
        assert len(dead_lines) == 1
        assert dead_lines[0]["severity"] == "ERROR"
        assert "dead-lettered" in dead_lines[0]["message"]

    def test_firestore_unreachable_answers_503(self, project: str) -> None:
        """Firestore unreachable: 503 (Stripe retries) within the documented bound."""
        from stripe_ledger.emulator import free_port

        env = server_env(
            project,
            FIRESTORE_EMULATOR_HOST=f"127.0.0.1:{free_port()}",
            STRIPE_FIRESTORE_TIMEOUT_SECONDS="2",
            STRIPE_LEASE_SECONDS="24",
        )
        function = FunctionServer(env).start()
        try:
            started = time.monotonic()
            response = function.post(make_event("test.counter"))
            elapsed = time.monotonic() - started
        finally:
            function.stop()
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        assert elapsed < 10


class TestRejections:
    """Bad requests get a clear error and write nothing."""

    def _post(self, server: FunctionServer, body: bytes, headers: dict[str, str]) -> Any:
        return requests.post(server.url, data=body, headers=headers, timeout=10)

    @pytest.mark.parametrize(
        ("header", "message"),
        [
            (None, "missing Stripe-Signature"),
            ("t=abc,v1=", "Unable to extract timestamp and signatures"),
            ("garbage", "Unable to extract timestamp and signatures"),
            ("t=123,v0=deadbeef", "No signatures found with expected scheme"),
        ],
    )
    def test_missing_or_unparseable_signature(
        self, server: FunctionServer, db: firestore.Client, header: str | None, message: str
    ) -> None:
        body = json.dumps(make_event("test.counter")).encode()
        headers = {"Stripe-Signature": header} if header else {}
        response = self._post(server, body, headers)
        assert response.status_code == 400
        assert message in response.json()["error"]
        assert nothing_written(db)

    def test_signed_with_an_unknown_secret(
        self, server: FunctionServer, db: firestore.Client
    ) -> None:
        response = server.post(make_event("test.counter"), secret=UNKNOWN_SECRET)
        assert response.status_code == 400
        assert "No signatures found matching" in response.json()["error"]
        assert nothing_written(db)

    def test_stale_timestamp(self, server: FunctionServer, db: firestore.Client) -> None:
        payload = json.dumps(make_event("test.counter"))
        header = sign(payload, timestamp=int(time.time()) - 301)
        response = self._post(server, payload.encode(), {"Stripe-Signature": header})
        assert response.status_code == 400
        assert "older than 300 s" in response.json()["error"]
        assert nothing_written(db)

    @pytest.mark.parametrize(
        ("payload", "message"),
        [
            ("not json at all", "not JSON"),
            ('{"id": "evt_1", "type": "x"}', "no data.object"),
            ('{"type": "x", "data": {"object": {}}, "created": 1}', "no valid id"),
            ("[1, 2]", "not a JSON object"),
        ],
    )
    def test_validly_signed_garbage(
        self, server: FunctionServer, db: firestore.Client, payload: str, message: str
    ) -> None:
        response = self._post(server, payload.encode(), {"Stripe-Signature": sign(payload)})
        assert response.status_code == 400
        assert message in response.json()["error"]
        assert nothing_written(db)

    def test_body_over_one_mib(self, server: FunctionServer, db: firestore.Client) -> None:
        payload = json.dumps(make_event("test.counter", {"id": "o", "blob": "x" * 1_100_000}))
        response = server.post(payload)
        assert response.status_code == 413
        assert nothing_written(db)

    def test_chunked_body_over_one_mib(self, server: FunctionServer, db: firestore.Client) -> None:
        """A body sent without Content-Length is cut off at the limit, not read whole."""
        chunks = (b"x" * 65536 for _ in range(20))
        response = requests.post(
            server.url, data=chunks, headers={"Stripe-Signature": "t=1,v1=00"}, timeout=10
        )
        assert response.status_code == 413
        assert nothing_written(db)

    @pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
    def test_other_methods(self, server: FunctionServer, db: firestore.Client, method: str) -> None:
        response = requests.request(method, server.url, timeout=10)
        assert response.status_code == 405
        assert response.headers["Allow"] == "POST"
        assert nothing_written(db)


class TestMisconfiguration:
    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            ({"STRIPE_WEBHOOK_SECRET": ""}, "STRIPE_WEBHOOK_SECRET is unset or empty"),
            ({"STRIPE_HANDLER_MODULES": "tests.no_such_module"}, "failed to import"),
        ],
    )
    def test_every_request_gets_500_and_a_critical_line(
        self, project: str, db: firestore.Client, overrides: dict[str, str], message: str
    ) -> None:
        function = FunctionServer(server_env(project, **overrides)).start()
        try:
            responses = [function.post(make_event("test.counter")) for _ in range(2)]
            responses.append(requests.get(function.url, timeout=10))
        finally:
            function.stop()
        assert [r.status_code for r in responses] == [500, 500, 500]
        entries = list(function.log_entries())  # our requests, and the readiness probe's
        assert len(entries) >= 3
        assert all(e["severity"] == "CRITICAL" and message in e["message"] for e in entries)
        assert nothing_written(db)


class TestConcurrency:
    @pytest.mark.parametrize("event_type", ["test.counter", "test.tally"])
    def test_each_event_once_under_concurrent_duplicates(
        self, project: str, db: firestore.Client, tmp_path: Path, event_type: str
    ) -> None:
        """24 events, each delivered 6 times at once through real HTTP (gunicorn, 8 threads):
        each event completes with its effect applied exactly once. `test.counter` reads
        through its transaction, so the event is claimed first: a delivery that finds it in
        flight gets a 409 and is retried as Stripe would. `test.tally` reads nothing, so
        each delivery runs it and the runs overlap: their commits race to create the
        record, one wins, and the others find the record and answer 200."""
        function = FunctionServer(server_env(project), threads=8).start()
        behaviour = {"sleep": 0.2, "runs_dir": str(tmp_path)}
        events = [make_event(event_type, {"id": f"obj_{n}", **behaviour}) for n in range(24)]
        first_answers: list[int] = []
        lock = threading.Lock()

        def deliver(event: dict[str, Any]) -> None:
            response = function.post(event)
            with lock:
                first_answers.append(response.status_code)
            if not response.ok:
                function.deliver_until_settled(event)

        try:
            with ThreadPoolExecutor(max_workers=48) as pool:
                list(pool.map(deliver, [e for e in events for _ in range(6)]))
        finally:
            function.stop()
        assert set(first_answers) <= {200, 409}
        # the duplicates really were concurrent:
        if event_type == "test.counter":
            assert first_answers.count(409) > 0
        else:
            assert _overlapping_runs(tmp_path) > 0
        for event in events:
            stored = record(db, event["id"])
            assert stored is not None
            assert stored["status"] == "completed"
            assert effects(db, event["id"]) == 1


class TestCrash:
    def test_sigkill_inside_the_transaction(
        self, project: str, db: firestore.Client, tmp_path: Path
    ) -> None:
        """The serving process is killed while a handler is inside its transaction; after a
        restart, Stripe-style redelivery completes the event with its effect exactly once.

        The killed transaction's read lock on the counter document is held by Firestore
        until the transaction expires (about a minute, in production too): redeliveries
        until then answer 503 and are retried.
        """
        event = _killed_inside_the_handler(project, "test.counter", tmp_path)
        assert effects(db, event["id"]) == 0
        stored = record(db, event["id"])
        assert stored is not None
        assert stored["status"] == "processing"

        response = _healed_after_restart(project, event, until_settled=True)
        assert response.json()["status"] == "completed"
        assert effects(db, event["id"]) == 1
        stored = record(db, event["id"])
        assert stored is not None
        assert stored["status"] == "completed"
        assert stored["attempts"] >= 2  # the killed attempt counted

    def test_sigkill_before_a_first_deliverys_commit(
        self, project: str, db: firestore.Client, tmp_path: Path
    ) -> None:
        """`test.tally` reads nothing, so its first delivery is claimed by its commit: killed
        before it, the delivery leaves no record and no effect, and the next delivery
        completes the event on attempt 1, its effect once. (Only a delivery that wrote a
        claim can have an abandoned attempt counted; events older than
        STRIPE_REDELIVERY_AGE_SECONDS are always claimed first.)"""
        event = _killed_inside_the_handler(project, "test.tally", tmp_path)
        assert effects(db, event["id"]) == 0
        assert record(db, event["id"]) is None

        response = _healed_after_restart(project, event, until_settled=False)
        assert response.json()["status"] == "completed"
        assert effects(db, event["id"]) == 1
        stored = record(db, event["id"])
        assert stored is not None
        assert (stored["status"], stored["attempts"]) == ("completed", 1)


def _killed_inside_the_handler(project: str, event_type: str, tmp_path: Path) -> dict[str, Any]:
    """Serve the function, post an `event_type` event whose handler hangs inside its
    transaction, and SIGKILL the server once the handler runs; the event posted."""
    marker = tmp_path / "inside-transaction"
    event = make_event(event_type, {"id": "obj_crash", "hang_marker": str(marker)})
    function = FunctionServer(server_env(project)).start()
    threading.Thread(target=lambda: _ignore_errors(function.post, event), daemon=True).start()
    deadline = time.monotonic() + 20
    while not marker.exists():
        assert time.monotonic() < deadline, "the handler never started"
        time.sleep(0.05)
    function.kill()
    return event


def _healed_after_restart(
    project: str, event: dict[str, Any], *, until_settled: bool
) -> requests.Response:
    """Restart the function and deliver `event` again, same ID, without its hang: once, or
    (`until_settled`) as Stripe retries, until a final answer; that answer."""
    restarted = FunctionServer(server_env(project)).start()
    healed = dict(event, data={"object": {"id": "obj_crash"}})
    try:
        if until_settled:
            return restarted.deliver_until_settled(healed, attempts=200, pause=0.5)
        return restarted.post(healed)
    finally:
        restarted.stop()


def _overlapping_runs(runs_dir: Path) -> int:
    """How many pairs of handler runs of one event overlapped in time (see
    tests/handlers_for_tests.py, `runs_dir`)."""
    runs: dict[str, list[tuple[float, float]]] = {}
    for run in runs_dir.iterdir():
        start, end = map(float, run.read_text().split())
        runs.setdefault(run.name.split(".")[0], []).append((start, end))
    return sum(
        1
        for spans in runs.values()
        for i, (start, end) in enumerate(spans)
        for other_start, other_end in spans[i + 1 :]
        if start < other_end and other_start < end
    )


def _ignore_errors(function: Any, *args: Any) -> None:
    with contextlib.suppress(requests.RequestException):
        function(*args)


def test_no_log_line_contains_a_payload_signature_or_secret(
    project: str, db: firestore.Client, tmp_path: Path
) -> None:
    """Over deliveries of every kind (completed, duplicate, failed, rejected), no log line
    contains the body, a signature header or a secret; every line is JSON."""
    function = FunctionServer(server_env(project)).start()
    fault = tmp_path / "fault"
    fault.touch()
    sent: list[str] = []
    try:
        for event in (
            make_event("test.counter", {"id": "o1", "marker": "PAYLOAD-MARKER-1"}),
            make_event("test.counter", {"id": "o2", "fail_while_exists": str(fault)}),
            make_event("customer.updated", {"id": "cus_1", "email": "someone@example.com"}),
        ):
            payload = json.dumps(event)
            sent.append(payload)
            for _ in range(2):
                header = sign(payload)
                sent.append(header)
                requests.post(
                    function.url, data=payload, headers={"Stripe-Signature": header}, timeout=10
                )
        bad = sign("other", UNKNOWN_SECRET)
        sent.append(bad)
        requests.post(function.url, data=sent[0], headers={"Stripe-Signature": bad}, timeout=10)
    finally:
        function.stop()
    text = function.log_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) >= 7
    for line in lines:
        json.loads(line)
    for forbidden in [*sent, SECRET, SECOND_SECRET, "PAYLOAD-MARKER-1", "someone@example.com"]:
        assert forbidden not in text
    for header in sent[1:]:
        if header.startswith("t="):
            assert header.split(",v1=")[1] not in text
