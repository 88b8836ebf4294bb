"""Issue 14, end to end: every front door (webhook, thin event, replay, reconcile) behaves
like one pipeline, with Firestore failures answered alike and never counted against an event.

Driven only through public doors: real HTTP to the function served by functions-framework on
gunicorn (`tests/pipeline_main.py` wraps `main.py` and injects Firestore faults on the wire,
with a gRPC interceptor), the `stripe-ledger` console script, Firestore reads and writes of
the documented records, and `tests.fake_stripe.FakeStripe` for Stripe's API. Handlers and
faults carried by event objects: tests/pipeline_handlers.py.

Each test of an issue item failed on the code before the pipeline (dd5f597), for the reason
the item describes; the suite-gap tests catch the mutations the issue lists.

The module shares one project, one fake and one fault file, and serves one function per
configuration (its settings), kept for the later tests of the same configuration: starting
gunicorn is most of a test's time. Tests stay apart by fresh event and object IDs; the fake
is reset and the fault rules replaced (their IDs made the test's own) before each test.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from google.cloud import firestore

from tests.cli_support import CliRun, run_cli
from tests.fake_stripe import FakeStripe
from tests.support import ROOT, SECRET, FunctionServer, make_event

pytestmark = [pytest.mark.emulator, pytest.mark.e2e]

MODULES = "tests.handlers_for_tests,tests.pipeline_handlers"
LEASE_SECONDS = 30
HANDLERS_FILE = ROOT / "tests" / "pipeline_handlers.py"


# --- helpers -------------------------------------------------------------------------


def thin_notification(event_type: str, related: dict[str, Any]) -> dict[str, Any]:
    """A thin event notification as Stripe sends it to an event destination."""
    kind = str(related["object"])
    return {
        "id": f"evt_test_{uuid.uuid4().hex}",
        "object": "v2.core.event",
        "type": event_type,
        "livemode": False,
        "created": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "context": None,
        "reason": {"type": "request", "request": {"id": "req_1", "idempotency_key": "ik_1"}},
        "related_object": {
            "id": related["id"],
            "type": kind,
            "url": f"/v1/{kind.replace('.', '/')}s/{related['id']}",
        },
    }


def publish(fake: FakeStripe, notification: dict[str, Any], snapshot: str | None = None) -> None:
    """Make the fake know the full thin event (`GET /v2/core/events/{id}`)."""
    fake.v2_events[notification["id"]] = {
        **notification,
        "snapshot_event": snapshot,
        "changes": None,
    }


def customer(**fields: Any) -> dict[str, Any]:
    return {"id": f"cus_{uuid.uuid4().hex[:14]}", "object": "customer", **fields}


def record(db: firestore.Client, event_id: str) -> dict[str, Any]:
    found = db.collection("stripe_events").document(event_id).get().to_dict()
    assert found is not None, f"{event_id} is not in the ledger"
    return found


def effects(db: firestore.Client, doc_id: str) -> int:
    """How many times an effect was applied (`test_effects/{id}.count`, written by
    tests.handlers_for_tests per event and tests.pipeline_handlers per customer)."""
    snapshot = db.collection("test_effects").document(doc_id).get()
    return int(snapshot.get("count")) if snapshot.exists else 0


def live_claim(stored: dict[str, Any]) -> bool:
    """Whether a record is `processing` under a lease that has not expired."""
    lease = stored.get("lease_expires_at")
    return stored.get("status") == "processing" and lease is not None and lease > datetime.now(UTC)


class Faults:
    """The fault rules read by tests/pipeline_main.py (see there), and what it injected.

    The file serves the whole module: `set` replaces the rules, each rule's ID prefixed with
    this test's token (so the injector's per-rule counts start at zero), and `injected`
    returns the IDs this test's rules fired, without the token."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.token = f"{uuid.uuid4().hex[:12]}:"
        path.write_text("[]")

    def set(self, *rules: dict[str, Any]) -> None:
        own = [{**rule, "id": self.token + str(rule["id"])} for rule in rules]
        self.path.write_text(json.dumps(own))

    def injected(self) -> list[str]:
        log = Path(f"{self.path}.log")
        lines = log.read_text().splitlines() if log.exists() else []
        ids = [str(json.loads(line)["id"]) for line in lines]
        return [rule[len(self.token) :] for rule in ids if rule.startswith(self.token)]


@pytest.fixture(scope="module")
def module_project(emulator_host: str) -> str:
    return f"stripe-ledger-pipeline-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def project(module_project: str) -> str:
    """The module's project (see the module), for `db` and the console script alike."""
    return module_project


@pytest.fixture(scope="module")
def module_fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        yield server.serve_objects()


@pytest.fixture
def fake(module_fake: FakeStripe) -> FakeStripe:
    """The module's fake, with nothing from an earlier test (events, objects, failures)."""
    return module_fake.reset()


@pytest.fixture(scope="module")
def faults_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pipeline-faults") / "faults.json"


@pytest.fixture
def faults(faults_path: Path) -> Faults:
    return Faults(faults_path)


_SERVED: dict[tuple[tuple[str, str], ...], FunctionServer] = {}
"""The functions served for this module, by configuration (see `serve`)."""


@pytest.fixture(scope="module", autouse=True)
def _stop_served(module_fake: FakeStripe) -> Iterator[None]:
    yield
    while _SERVED:
        _SERVED.popitem()[1].stop()


@contextlib.contextmanager
def serve(project: str, fake: FakeStripe, faults: Faults, **env: str) -> Iterator[FunctionServer]:
    """The function with the test handlers and the fault injector, talking to the fake: the
    one already serving this configuration for the module, or a new one (see the module)."""
    config = {
        "PYTHONPATH": str(ROOT),
        "PIPELINE_FAULTS": str(faults.path),
        "GOOGLE_CLOUD_PROJECT": project,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_HANDLER_MODULES": MODULES,
        "STRIPE_API_KEY": fake.api_key,
        "STRIPE_API_BASE": fake.url,
        "STRIPE_API_TIMEOUT_SECONDS": "2",
        "STRIPE_FIRESTORE_TIMEOUT_SECONDS": "1",
        "STRIPE_LEASE_SECONDS": str(LEASE_SECONDS),
        **env,
    }
    key = tuple(sorted(config.items()))
    function = _SERVED.get(key)
    if function is None or function.process is None or function.process.poll() is not None:
        function = FunctionServer(config, source=ROOT / "tests" / "pipeline_main.py").start()
        _SERVED[key] = function
    yield function


def cli(project: str, fake: FakeStripe, *args: str, **env: str | None) -> CliRun:
    """`stripe-ledger ARGS` with the test handlers and the fake's API."""
    environ: dict[str, str | None] = {
        "STRIPE_HANDLER_MODULES": MODULES,
        "STRIPE_API_KEY": fake.api_key,
        "STRIPE_API_BASE": fake.url,
        **env,
    }
    return run_cli(*args, project=project, env=environ)


# --- item 1 --------------------------------------------------------------------------


class TestThinEventWithATwinMeetingAnOutage:
    @pytest.mark.parametrize("outage", ["ServiceUnavailable", "Aborted"])
    def test_is_released_each_time_and_applied_once_after(
        self,
        project: str,
        db: firestore.Client,
        fake: FakeStripe,
        faults: Faults,
        tmp_path: Path,
        outage: str,
    ) -> None:
        """A thin event with a snapshot twin whose handlers meet a Firestore outage (or
        unresolved contention), three deliveries in a row with STRIPE_MAX_ATTEMPTS=2: each is
        answered 503 with Retry-After and leaves the thin record released (`failed`, its
        attempt given back, no live lease), never dead; once Firestore is back, the next
        delivery applies the change once and completes both records."""
        fault = tmp_path / "outage"
        fault.touch()
        obj = customer(email="twin@example.com", outage_while_exists=str(fault), outage=outage)
        fake.put_object(obj)
        snapshot = make_event("customer.updated", obj)
        notification = thin_notification("v1.customer.updated", obj)
        publish(fake, notification, snapshot=snapshot["id"])
        with serve(project, fake, faults, STRIPE_MAX_ATTEMPTS="2") as function:
            for delivery in range(3):
                response = function.post(notification)
                assert response.status_code == 503, (delivery, response.text)
                assert response.headers.get("Retry-After"), delivery
                thin = record(db, notification["id"])
                assert not live_claim(thin), (delivery, thin)
                assert (thin["status"], thin["attempts"]) == ("failed", 0), (delivery, thin)
            fault.unlink()
            response = function.post(notification)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "completed"
        thin, twin = record(db, notification["id"]), record(db, snapshot["id"])
        assert (thin["status"], thin["lease_expires_at"]) == ("completed", None)
        assert twin["status"] == "completed"
        assert effects(db, obj["id"]) == 1
        projected = db.collection("customers").document(obj["id"]).get()
        assert projected.get("email") == "twin@example.com"


# --- item 2 --------------------------------------------------------------------------


class TestFirestoreErrorsOnTheThinPath:
    @pytest.mark.parametrize("where", ["thin_claim", "twin_claim", "failure_record"])
    def test_are_answered_503_with_retry_after(
        self, project: str, fake: FakeStripe, faults: Faults, where: str
    ) -> None:
        """Firestore unavailable for one of the thin path's writes (the thin event's claim,
        its twin's claim, or the record of a failed fetch from Stripe): 503 with Retry-After,
        as on the snapshot path, never a 500 `internal error`."""
        obj = customer(email="thin@example.com")
        fake.put_object(obj)
        snapshot = make_event("customer.updated", obj)
        notification = thin_notification("v1.customer.updated", obj)
        publish(fake, notification, snapshot=snapshot["id"])
        rule: dict[str, Any] = {"id": where, "method": "Commit", "code": "UNAVAILABLE"}
        if where == "twin_claim":
            rule["document"] = f"stripe_events/{snapshot['id']}"
        else:
            rule["document"] = f"stripe_events/{notification['id']}"
        if where == "failure_record":
            rule["skip"] = 1  # the claim lands; the fetch fails; recording that fails
            fake.fail(500, times=100)
        faults.set(rule)
        with serve(project, fake, faults) as function:
            response = function.post(notification)
        assert where in faults.injected()
        assert response.status_code == 503, response.text
        assert response.headers.get("Retry-After")
        assert "internal error" not in response.text


# --- item 3 --------------------------------------------------------------------------


# How a write's answer is lost: applied before its answer is lost, or applied late, after the
# delivery has read the document back and found nothing (seen on a freshly started emulator).
LOSSES = pytest.mark.parametrize("loss", ["after_write", "late"])


class TestAClaimWhoseAnswerIsLost:
    @LOSSES
    def test_lost_create_answer_is_recognised(
        self, project: str, db: firestore.Client, fake: FakeStripe, faults: Faults, loss: str
    ) -> None:
        """STRIPE_MAX_ATTEMPTS=1; the claim's create() reaches Firestore but its answer is
        lost (DeadlineExceeded): the delivery recognises its own write and either completes
        the event or releases it, so the next delivery is not refused for a whole lease; the
        handler runs once, the attempt that never ran is not counted, the event completes.
        A create applied late is sent again, and the second answer settles it."""
        event = make_event("test.counter")
        faults.set(
            {
                "id": "lost-create",
                "method": "Commit",
                "document": f"stripe_events/{event['id']}",
                "code": "DEADLINE_EXCEEDED",
                "times": 1,
                loss: True,
            }
        )
        with serve(project, fake, faults, STRIPE_MAX_ATTEMPTS="1") as function:
            first = function.post(event)
            assert faults.injected() == ["lost-create"]
            assert first.status_code in (200, 503), first.text
            assert not live_claim(record(db, event["id"])), record(db, event["id"])
            second = function.post(event)
        assert second.status_code == 200, second.text
        stored = record(db, event["id"])
        assert (stored["status"], stored["attempts"]) == ("completed", 1)
        assert effects(db, event["id"]) == 1

    @LOSSES
    def test_lost_takeover_answer_is_recognised(
        self,
        project: str,
        db: firestore.Client,
        fake: FakeStripe,
        faults: Faults,
        tmp_path: Path,
        loss: str,
    ) -> None:
        """STRIPE_MAX_ATTEMPTS=2; attempt 1 fails in its handler; the takeover's
        compare-and-set reaches Firestore but its answer is lost: the delivery recognises
        its own write, the next delivery is not refused for a whole lease, and the event
        completes with its handler applied once and attempts 2 (the lost one not counted),
        never dead. A compare-and-set applied late is sent again, and refused by its own
        precondition once the first has landed."""
        fault = tmp_path / "fault"
        fault.touch()
        event = make_event("test.counter", {"id": "obj_1", "fail_while_exists": str(fault)})
        with serve(project, fake, faults, STRIPE_MAX_ATTEMPTS="2") as function:
            assert function.post(event).status_code == 500
            assert (record(db, event["id"])["status"], record(db, event["id"])["attempts"]) == (
                "failed",
                1,
            )
            fault.unlink()
            faults.set(
                {
                    "id": "lost-takeover",
                    "method": "Commit",
                    "document": f"stripe_events/{event['id']}",
                    "code": "DEADLINE_EXCEEDED",
                    "skip": 1,  # the delivery's create(), which finds the failed record
                    "times": 1,
                    loss: True,
                }
            )
            second = function.post(event)
            assert faults.injected() == ["lost-takeover"]
            assert second.status_code in (200, 503), second.text
            assert not live_claim(record(db, event["id"])), record(db, event["id"])
            third = function.post(event)
        assert third.status_code == 200, third.text
        stored = record(db, event["id"])
        assert (stored["status"], stored["attempts"]) == ("completed", 2)
        assert effects(db, event["id"]) == 1


# --- item 4 --------------------------------------------------------------------------


class TestHandlersSharingADocument:
    @pytest.mark.parametrize("event_type", ["test.rmw.declared", "test.rmw.undeclared"])
    def test_a_read_after_an_earlier_handlers_write_fails_the_event(
        self,
        project: str,
        db: firestore.Client,
        fake: FakeStripe,
        faults: Faults,
        event_type: str,
    ) -> None:
        """Two handlers of one event each read-modify-write `accounts/{id}` (the README's
        `extend_access`, with and without `reads=`): the second handler's read raises
        ReadAfterWrite, the event is `failed` (500) with last_error naming it, and nothing
        of either handler is applied."""
        account_id = f"acct_{uuid.uuid4().hex[:12]}"
        account = db.collection("accounts").document(account_id)
        account.set({"invoices_paid": 5})
        before = account.get().update_time
        event = make_event(event_type, {"id": account_id, "object": "invoice"})
        with serve(project, fake, faults) as function:
            response = function.post(event)
        assert response.status_code == 500, response.text
        stored = record(db, event["id"])
        assert stored["status"] == "failed"
        assert "ReadAfterWrite" in stored["last_error"]
        after = account.get()
        assert (after.to_dict(), after.update_time) == ({"invoices_paid": 5}, before)


# --- items 5, 6 and 7: replay and reconcile ------------------------------------------


class TestReplayOfAThinEvent:
    @pytest.mark.parametrize("status", ["failed", "dead"])
    def test_fetches_like_a_live_delivery_and_completes(
        self,
        project: str,
        db: firestore.Client,
        fake: FakeStripe,
        faults: Faults,
        tmp_path: Path,
        status: str,
    ) -> None:
        """A thin event left `failed` or `dead` by its handler: once the fault is gone,
        `stripe-ledger replay` fetches the event and its object through Stripe's API, as a
        live delivery does, and completes it (exit 0), projecting the object's state now."""
        fault = tmp_path / "fault"
        fault.touch()
        obj = customer(email="old@example.com", fail_while_exists=str(fault))
        fake.put_object(obj)
        notification = thin_notification("v1.customer.updated", obj)
        publish(fake, notification)
        with serve(project, fake, faults, STRIPE_MAX_ATTEMPTS="2") as function:
            for _ in range(1 if status == "failed" else 2):
                function.post(notification)
        assert record(db, notification["id"])["status"] == status
        fault.unlink()
        fake.put_object({**obj, "email": "now@example.com"})
        run = cli(project, fake, "replay", notification["id"], "--json")
        assert run.returncode == 0, run
        assert record(db, notification["id"])["status"] == "completed"
        projected = db.collection("customers").document(obj["id"]).get()
        assert projected.get("email") == "now@example.com"
        assert effects(db, obj["id"]) == 1


class TestOperatorToolsInRefetchMode:
    def test_replay_projects_the_api_state(
        self, project: str, db: firestore.Client, fake: FakeStripe, faults: Faults
    ) -> None:
        """STRIPE_REFETCH=true: an event failed while Stripe's API was down; its replay reads
        the object back from the API and projects Stripe's current state, as a live delivery
        would, not the snapshot it stored."""
        obj = customer(email="api@example.com")
        fake.put_object(obj)
        event = make_event("customer.updated", {**obj, "email": "snapshot@example.com"})
        fake.fail(500, times=100)
        with serve(project, fake, faults, STRIPE_REFETCH="true") as function:
            assert function.post(event).status_code == 503
        fake._failures.clear()
        assert record(db, event["id"])["status"] == "failed"
        run = cli(project, fake, "replay", event["id"], "--json", STRIPE_REFETCH="true")
        assert run.returncode == 0, run
        projected = db.collection("customers").document(obj["id"]).get()
        assert projected.get("email") == "api@example.com"

    def test_reconcile_projects_the_api_state(
        self, project: str, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """STRIPE_REFETCH=true: an event the ledger lacks, processed by reconcile, projects
        the object's current state from the API, not the snapshot the Events API lists."""
        obj = customer(email="api@example.com")
        fake.put_object(obj)
        event = make_event(
            "customer.updated", {**obj, "email": "snapshot@example.com"}, created=int(time.time())
        )
        fake.add_event(event)
        run = cli(project, fake, "reconcile", "--json", STRIPE_REFETCH="true")
        assert run.returncode == 0, run
        assert record(db, event["id"])["status"] == "completed"
        projected = db.collection("customers").document(obj["id"]).get()
        assert projected.get("email") == "api@example.com"


class TestReplayWithoutTheHandlerThatFailed:
    def test_is_refused_naming_the_missing_handler(
        self, project: str, db: firestore.Client, fake: FakeStripe, faults: Faults
    ) -> None:
        """A dead event whose last_error names a handler of a module the tool has not
        loaded (STRIPE_HANDLER_MODULES not set as deployed): the replay is refused (exit 1),
        naming the missing handler and STRIPE_HANDLER_MODULES; the record stays dead and no
        handler's effect is written."""
        obj = customer(email="k@example.com", raise_key_error="x")
        event = make_event("customer.updated", obj)
        with serve(project, fake, faults, STRIPE_MAX_ATTEMPTS="1") as function:
            assert function.post(event).json()["status"] == "dead"
        handler = "tests.pipeline_handlers.apply_customer"
        assert record(db, event["id"])["last_error"] == f"KeyError: 'x' (in {handler})"
        run = cli(project, fake, "replay", event["id"], "--json", STRIPE_HANDLER_MODULES=None)
        assert run.returncode == 1, run
        [result] = run.json()["events"]
        assert result["outcome"] not in ("completed", "ignored", "duplicate"), result
        assert handler in run.stdout, run
        assert "STRIPE_HANDLER_MODULES" in run.stdout, run
        assert record(db, event["id"])["status"] == "dead"
        assert not db.collection("customers").document(obj["id"]).get().exists


# --- item 8 --------------------------------------------------------------------------


class _MetadataServer:
    """A GCE metadata server under the test's control: it first answers 503 without the
    `Metadata-Flavor` header (google.auth concludes "not on GCE": no credentials), then,
    once `answering`, like Compute Engine's (ping, project, service account, token)."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.answering = False
        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.paths.append(self.path)
                status, body = server.answer(self.path)
                self.send_response(status)
                if server.answering:
                    self.send_header("Metadata-Flavor", "Google")
                content = body.encode()
                self.send_header("Content-Length", str(len(content)))
                self.send_header(
                    "Content-Type", "application/json" if body[:1] in "{[" else "text/plain"
                )
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._http.server_address[1]}"

    def answer(self, path: str) -> tuple[int, str]:
        if not self.answering:
            return 503, "metadata server unavailable"
        path = path.split("?", 1)[0]
        if path == "/":
            return 200, ""
        if path.endswith("/project/project-id"):
            return 200, self.project
        if path.endswith("/universe/universe-domain"):
            return 200, "googleapis.com"
        if path.endswith("/token"):
            return 200, json.dumps(
                {"access_token": "ya29.test-token", "expires_in": 3600, "token_type": "Bearer"}
            )
        if path.endswith("/service-accounts/default/"):
            return 200, json.dumps(
                {
                    "email": f"webhook@{self.project}.iam.gserviceaccount.com",
                    "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                    "aliases": ["default"],
                }
            )
        return 404, "not found"

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()


class TestColdStartWithoutCredentials:
    def test_the_instance_recovers_once_credentials_can_be_obtained(
        self, project: str, tmp_path: Path
    ) -> None:
        """Served against production Firestore (no FIRESTORE_EMULATOR_HOST, no
        GOOGLE_APPLICATION_CREDENTIALS, no gcloud configuration, NO_GCE_CHECK unset), with
        GCE_METADATA_HOST/GCE_METADATA_IP on a local metadata server that first refuses:
        google.auth finds no credentials, and the request is answered 503 with Retry-After
        (a transient cause, for Stripe to retry), not a 500 remembered for the instance's
        life. Once the metadata server answers, the next request builds the client again:
        the metadata server is asked again, and the request gets past credentials (it is
        answered like any Firestore outage, since production Firestore is out of reach of a
        test: 503 with Retry-After, ERROR, not CRITICAL). Robust because nothing outside the
        test is needed: the metadata endpoints are ours, and whatever production Firestore
        answers a fake token (unreachable or UNAUTHENTICATED) is a 503 on the fixed code.
        """
        metadata = _MetadataServer(project)
        function = FunctionServer(
            {
                "GOOGLE_CLOUD_PROJECT": project,
                "STRIPE_WEBHOOK_SECRET": SECRET,
                "GCE_METADATA_HOST": metadata.host,
                "GCE_METADATA_IP": metadata.host,
                "CLOUDSDK_CONFIG": str(tmp_path / "no-gcloud-config"),
                "STRIPE_FIRESTORE_TIMEOUT_SECONDS": "1",
                "STRIPE_LEASE_SECONDS": "12",
            }
        )
        for name in ("FIRESTORE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "NO_GCE_CHECK"):
            function.env.pop(name, None)
        function.start()
        try:
            first = function.post(make_event("customer.updated", customer()))
            assert metadata.paths, "google.auth never asked the metadata server"
            assert first.status_code == 503, first.text
            assert first.headers.get("Retry-After")
            metadata.answering = True
            asked_before = len(metadata.paths)
            second = function.post(make_event("customer.updated", customer()))
        finally:
            function.stop()
            metadata.stop()
        assert len(metadata.paths) > asked_before, "the instance did not try again"
        assert second.status_code == 503, second.text
        assert second.headers.get("Retry-After")
        *_, last = function.log_entries()
        assert last["severity"] == "ERROR", last
        assert "credentials" not in last["message"].lower(), last


# --- item 9 --------------------------------------------------------------------------


class TestErrorDetailsStayInTheLogs:
    def test_a_misconfiguration_is_answered_without_its_details(
        self, project: str, fake: FakeStripe, faults: Faults
    ) -> None:
        """A handler module that fails to import: any caller, even an unsigned GET, gets a
        500 whose body names the class of problem only; the module, the exception and its
        message are in the CRITICAL log line, not in the answer."""
        with serve(
            project, fake, faults, STRIPE_HANDLER_MODULES="tests.pipeline_broken_handlers"
        ) as function:
            answers = [
                requests.get(function.url, timeout=10),
                function.post(make_event("test.counter")),
            ]
        for answer in answers:
            assert answer.status_code == 500
            assert set(answer.json()) == {"error"}, answer.text
            for detail in ("pipeline_broken_handlers", "RuntimeError", "IMPORT-DETAIL-7f3a"):
                assert detail not in answer.text, answer.text
        critical = [e for e in function.log_entries() if e["severity"] == "CRITICAL"]
        assert critical
        assert all("IMPORT-DETAIL-7f3a" in json.dumps(entry) for entry in critical)

    def test_a_handlers_traceback_goes_to_the_error_line_only(
        self, project: str, db: firestore.Client, fake: FakeStripe, faults: Faults, tmp_path: Path
    ) -> None:
        """A handler that raises: the ERROR log line of the delivery carries its traceback,
        with the file and line of the handler's code; the record's last_error and the HTTP
        answer carry the exception's type and message only."""
        fault = tmp_path / "fault"
        fault.touch()
        event = make_event("customer.updated", customer(fail_while_exists=str(fault)))
        with serve(project, fake, faults) as function:
            response = function.post(event)
        assert response.status_code == 500
        [line] = [
            number
            for number, text in enumerate(HANDLERS_FILE.read_text().splitlines(), 1)
            if text.endswith("# HANDLER-RAISES-HERE")
        ]
        where = f'pipeline_handlers.py", line {line}'
        errors = [
            entry
            for entry in function.log_entries()
            if entry.get("event_id") == event["id"] and entry["severity"] == "ERROR"
        ]
        assert any(where in entry.get("stack_trace", "") for entry in errors), errors
        last_error = record(db, event["id"])["last_error"]
        assert last_error.startswith("RuntimeError: injected handler fault"), last_error
        for text in (last_error, response.text):
            assert "Traceback" not in text
            assert "pipeline_handlers.py" not in text


# --- suite gaps b and d: pass today, catch mutations ---------------------------------


class TestAForcedReplayOfTheEventThatWroteTheState:
    def test_writes_nothing_to_the_projection(
        self, project: str, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """`stripe-ledger replay --force` of the event that wrote a projection orders equal
        to the stored state: it completes (counted in `replays`) and leaves the projection
        document untouched (same update_time; a field the test added is still there)."""
        obj = customer(email="once@example.com")
        event = make_event("customer.updated", obj, created=int(time.time()) - 60)
        fake.add_event(event)
        assert cli(project, fake, "reconcile").returncode == 0
        projection = db.collection("customers").document(obj["id"])
        projection.update({"touched_by_test": True})
        before = projection.get().update_time
        run = cli(project, fake, "replay", "--force", event["id"], "--json")
        assert run.returncode == 0, run
        stored = record(db, event["id"])
        assert (stored["status"], stored["replays"]) == ("completed", 1)
        after = projection.get()
        assert after.update_time == before
        assert after.get("touched_by_test") is True


class TestALiveClaim:
    def test_is_answered_409_with_the_remaining_lease(
        self, project: str, db: firestore.Client, fake: FakeStripe, faults: Faults
    ) -> None:
        """A `processing` record whose lease has 40 s left (written directly, as a delivery
        in flight leaves it): a delivery of the event is answered 409 with Retry-After the
        remaining seconds of the lease, runs nothing and writes nothing."""
        event = make_event("test.counter")
        now = datetime.now(UTC)
        ref = db.collection("stripe_events").document(event["id"])
        ref.set(
            {
                "type": event["type"],
                "status": "processing",
                "attempts": 1,
                "received_at": now,
                "updated_at": now,
                "completed_at": None,
                "lease_expires_at": now + timedelta(seconds=40),
                "last_error": None,
                "livemode": False,
                "api_version": event["api_version"],
                "created": datetime.fromtimestamp(event["created"], UTC),
                "object_id": event["data"]["object"]["id"],
                "account": None,
                "payload": json.dumps(event),
                "expire_at": now + timedelta(days=35),
            }
        )
        before = ref.get().update_time
        with serve(project, fake, faults) as function:
            started = datetime.now(UTC)
            response = function.post(event)
        assert response.status_code == 409, response.text
        remaining = (now + timedelta(seconds=40) - started).total_seconds()
        assert remaining - 2 <= int(response.headers["Retry-After"]) <= remaining + 1
        assert effects(db, event["id"]) == 0
        assert ref.get().update_time == before
