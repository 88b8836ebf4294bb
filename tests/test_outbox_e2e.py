"""The outbox end to end: real HTTP to the function served by functions-framework, a real
SIGKILL between the commit and the executor, `stripe-ledger outbox` through its console
script, and the `run_outbox` function, against the emulator.

Handlers and executor: tests/outbox_handlers.py (its executor counts every run in
Firestore, so runs in other processes are counted too).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import functions_framework
import pytest
import requests
from google.cloud import firestore

from stripe_ledger import logs
from stripe_ledger.outbox import task_id
from tests.cli_support import run_cli
from tests.support import ROOT, SECRET, FunctionServer, make_event

pytestmark = [pytest.mark.emulator, pytest.mark.e2e]

MODULES = "tests.outbox_handlers"


def server_env(project: str) -> dict[str, str]:
    return {
        "GOOGLE_CLOUD_PROJECT": project,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_HANDLER_MODULES": MODULES,
        "STRIPE_FIRESTORE_TIMEOUT_SECONDS": "1",
        "STRIPE_LEASE_SECONDS": "12",
    }


def outbox_event(*tasks: dict[str, Any]) -> dict[str, Any]:
    return make_event("test.outbox", {"id": "in_e2e", "object": "invoice", "tasks": list(tasks)})


def runs(db: firestore.Client, key: str) -> int:
    snapshot = db.collection("test_task_runs").document(task_id(key)).get()
    return int(snapshot.get("runs")) if snapshot.exists else 0


def task(db: firestore.Client, key: str) -> dict[str, Any]:
    found = db.collection("stripe_tasks").document(task_id(key)).get().to_dict()
    assert found is not None, f"no task {key}"
    return found


def crashing_server(project: str) -> FunctionServer:
    """The function, killed after each commit and before the tasks run (the crash window)."""
    env = {**server_env(project), "PYTHONPATH": str(ROOT)}
    return FunctionServer(env, source=ROOT / "tests" / "outbox_crash_main.py").start()


@pytest.fixture
def server(project: str) -> Iterator[FunctionServer]:
    function = FunctionServer(server_env(project)).start()
    yield function
    function.stop()


@pytest.fixture(scope="class")
def class_project(emulator_host: str) -> str:
    return f"stripe-ledger-outbox-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="class")
def class_server(class_project: str) -> Iterator[FunctionServer]:
    function = FunctionServer(server_env(class_project)).start()
    yield function
    function.stop()


class TestDelivery:
    """One function serves the class, in a project of its own (starting gunicorn is most of
    a test's time): each test reads only its own task key and its own log line, and the
    webhook runs only its own event's tasks."""

    @pytest.fixture
    def project(self, class_project: str) -> str:
        return class_project

    @pytest.fixture
    def server(self, class_server: FunctionServer) -> FunctionServer:
        return class_server

    def test_the_executor_runs_before_the_answer(
        self, server: FunctionServer, db: firestore.Client
    ) -> None:
        """A delivery answers 200 completed once its task has run: the run is counted and
        the task done by the time the answer arrives."""
        event = outbox_event({"key": "e2e-before-answer"})
        response = server.post(event)
        assert response.status_code == 200
        assert response.json()["status"] == "completed"
        assert runs(db, "e2e-before-answer") == 1
        assert task(db, "e2e-before-answer")["status"] == "done"

    def test_a_failing_executor_still_answers_200(
        self, server: FunctionServer, db: firestore.Client
    ) -> None:
        """The executor raises: the event is committed and answered 200 (Stripe must not
        resend it), the task is pending with its error, and a WARNING line says so."""
        event = outbox_event({"key": "e2e-fails", "payload": {"fail_runs": 1}})
        response = server.post(event)
        assert response.status_code == 200
        assert response.json()["status"] == "completed"
        stored = task(db, "e2e-fails")
        assert (stored["status"], stored["attempts"]) == ("pending", 1)
        assert stored["last_error"] == "RuntimeError: injected executor fault on run 1"
        (line,) = [e for e in server.log_entries() if e.get("task_key") == "e2e-fails"]
        assert (line["severity"], line["task_status"], line["event_id"]) == (
            "WARNING",
            "failed",
            event["id"],
        )

    def test_a_task_runs_once_when_its_event_is_delivered_five_times_at_once(
        self, server: FunctionServer, db: firestore.Client
    ) -> None:
        """Five concurrent deliveries of one event (Stripe's retries racing, over HTTP): one
        completes, the others are answered 409 or duplicate, and the task runs once."""
        event = outbox_event({"key": "e2e-five"})
        barrier = threading.Barrier(5)

        def deliver() -> int:
            barrier.wait()
            return server.post(event).status_code

        with ThreadPoolExecutor(5) as pool:
            statuses = sorted(pool.map(lambda _: deliver(), range(5)))
        assert set(statuses) <= {200, 409}, statuses
        server.deliver_until_settled(event)
        assert runs(db, "e2e-five") == 1
        assert task(db, "e2e-five")["status"] == "done"


class TestCrashAfterCommit:
    def test_outbox_run_completes_the_task_a_crash_left_pending(
        self, project: str, db: firestore.Client
    ) -> None:
        """The process is killed after the event's commit and before its executor runs: no
        answer, the event completed, its task pending with no run. `stripe-ledger outbox
        run` then runs it once and it is done; Stripe's redelivery is a duplicate that runs
        nothing more."""
        doomed = crashing_server(project)
        event = outbox_event({"key": "e2e-crash"})
        try:
            with pytest.raises(requests.ConnectionError):
                doomed.post(event)
        finally:
            doomed.kill()
        record = db.collection("stripe_events").document(event["id"]).get()
        assert record.get("status") == "completed"
        pending = task(db, "e2e-crash")
        assert (pending["status"], pending["attempts"]) == ("pending", 0)
        assert runs(db, "e2e-crash") == 0

        listed = run_cli(
            "outbox",
            "list",
            "--status",
            "pending",
            "--json",
            project=project,
            env={"STRIPE_HANDLER_MODULES": MODULES},
        )
        assert listed.returncode == 0, listed
        assert [t["key"] for t in listed.json()["tasks"]] == ["e2e-crash"]

        ran = run_cli(
            "outbox", "run", "--json", project=project, env={"STRIPE_HANDLER_MODULES": MODULES}
        )
        assert ran.returncode == 0, ran
        report = ran.json()
        assert (report["due"], report["counts"]) == (1, {"done": 1})
        (result,) = report["tasks"]
        assert (result["key"], result["outcome"], result["attempt"]) == ("e2e-crash", "done", 1)
        assert runs(db, "e2e-crash") == 1
        assert task(db, "e2e-crash")["status"] == "done"
        lines = ran.log_lines()
        assert [line["task_status"] for line in lines if "task_status" in line] == ["done"]
        assert lines[-1]["message"] == "outbox run finished: 1 done"

        again = run_cli(
            "outbox", "run", "--json", project=project, env={"STRIPE_HANDLER_MODULES": MODULES}
        )
        assert (again.returncode, again.json()["due"]) == (0, 0)

        server = FunctionServer(server_env(project)).start()
        try:
            response = server.post(event)
        finally:
            server.stop()
        assert response.json()["status"] == "duplicate"
        assert runs(db, "e2e-crash") == 1


class TestCli:
    def test_outbox_run_exits_1_when_a_run_fails_and_lists_it(
        self, server: FunctionServer, project: str, db: firestore.Client
    ) -> None:
        """A task whose executor fails is listed with its error; `outbox run --dry-run`
        reports it only once it is due (its backoff is 15-30 s, so here: not yet), and a
        forced failure of `outbox run` exits 1."""
        server.post(outbox_event({"key": "e2e-listed", "payload": {"fail_runs": 9}}))
        listed = run_cli("outbox", "list", project=project, env={"STRIPE_HANDLER_MODULES": MODULES})
        assert listed.returncode == 0, listed
        assert "e2e-listed" in listed.stdout
        assert "injected executor fault on run 1" in listed.stdout
        dry = run_cli(
            "outbox",
            "run",
            "--dry-run",
            "--json",
            project=project,
            env={"STRIPE_HANDLER_MODULES": MODULES},
        )
        assert (dry.returncode, dry.json()["due"]) == (0, 0)
        # Make it due now, as the clock would in 30 s.
        db.collection("stripe_tasks").document(task_id("e2e-listed")).update(
            {"next_attempt_at": datetime.now(UTC)}
        )
        ran = run_cli("outbox", "run", project=project, env={"STRIPE_HANDLER_MODULES": MODULES})
        assert ran.returncode == 1, ran
        assert "outbox run: 1 failed" in ran.stdout
        assert task(db, "e2e-listed")["attempts"] == 2

    def test_without_the_executor_module_nothing_runs(
        self, server: FunctionServer, project: str, db: firestore.Client
    ) -> None:
        """Run without the module that registers the executor, `outbox run` reports
        no_executor, exits 1, and leaves the task untouched."""
        server.post(outbox_event({"key": "e2e-no-executor", "payload": {"fail_runs": 1}}))
        db.collection("stripe_tasks").document(task_id("e2e-no-executor")).update(
            {"next_attempt_at": datetime.now(UTC)}
        )
        before = task(db, "e2e-no-executor")
        ran = run_cli(
            "outbox", "run", "--json", project=project, env={"STRIPE_HANDLER_MODULES": None}
        )
        assert ran.returncode == 1, ran
        assert ran.json()["counts"] == {"no_executor": 1}
        assert task(db, "e2e-no-executor") == before

    def test_outbox_retry_runs_dead_tasks_again(
        self, project: str, db: firestore.Client, tmp_path: Path
    ) -> None:
        """A task dead after its one allowed run (the fault file exists) is left dead by
        `outbox run`; once the fault is gone, `outbox retry --dead` revives and runs it: done,
        exit 0, and the task says who revived it."""
        fault = tmp_path / "fault"
        fault.touch()
        server = FunctionServer({**server_env(project), "STRIPE_TASK_MAX_ATTEMPTS": "1"}).start()
        try:
            payload = {"fail_while_exists": str(fault)}
            server.post(outbox_event({"key": "e2e-dead", "payload": payload}))
        finally:
            server.stop()
        assert task(db, "e2e-dead")["status"] == "dead"
        env = {"STRIPE_HANDLER_MODULES": MODULES, "STRIPE_TASK_MAX_ATTEMPTS": "1"}
        assert run_cli("outbox", "run", "--json", project=project, env=env).json()["due"] == 0
        dry = run_cli("outbox", "retry", "--dead", "--dry-run", "--json", project=project, env=env)
        assert (dry.returncode, dry.json()["counts"]) == (0, {"would_run": 1}), dry
        assert task(db, "e2e-dead")["status"] == "dead"
        fault.unlink()
        retried = run_cli("outbox", "retry", "--dead", "--json", project=project, env=env)
        assert retried.returncode == 0, retried
        (result,) = retried.json()["tasks"]
        assert (result["key"], result["outcome"], result["attempt"]) == ("e2e-dead", "done", 1)
        revived = task(db, "e2e-dead")
        assert (revived["status"], revived["revived"]) == ("done", 1)
        assert revived["last_note"].startswith("revived by stripe-ledger (user ")
        assert runs(db, "e2e-dead") == 2

    @pytest.mark.parametrize(
        "args",
        [
            ["outbox", "list", "--status", "failed"],
            ["outbox"],
            ["outbox", "retry"],
            ["outbox", "retry", "some-key", "--dead"],
            ["outbox", "retry", "some-key", "--task", "x"],
        ],
    )
    def test_usage_errors_exit_2(self, args: list[str]) -> None:
        """A status tasks do not have, no subcommand, retry with keys and --dead or
        neither, --task without --dead: one line, exit 2."""
        run = run_cli(*args)
        assert run.returncode == 2, run
        assert len(run.log_lines()) == 1


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """main.py configures this package's logger for its process; put it back after."""
    ours = logs.logger
    saved = (ours.handlers[:], ours.level, ours.propagate)
    yield
    ours.handlers, ours.propagate = saved[0], saved[2]
    ours.setLevel(saved[1])


class TestScheduledFunction:
    def test_run_outbox_runs_the_due_tasks(
        self,
        project: str,
        db: firestore.Client,
        monkeypatch: pytest.MonkeyPatch,
        restore_logging: None,
    ) -> None:
        """main.run_outbox, as Cloud Scheduler calls it (POST, no signature, no signing
        secret configured): the due task runs, the answer is 200 with counts; GET is 405."""
        doomed = crashing_server(project)
        try:
            with pytest.raises(requests.ConnectionError):
                doomed.post(outbox_event({"key": "e2e-scheduled"}))
        finally:
            doomed.kill()
        for name, value in server_env(project).items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("STRIPE_WEBHOOK_SECRET")
        app = functions_framework.create_app(target="run_outbox", source=str(ROOT / "main.py"))
        client = app.test_client()
        assert client.get("/").status_code == 405
        response = client.post("/")
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json() == {"due": 1, "counts": {"done": 1}}
        assert runs(db, "e2e-scheduled") == 1
        assert client.post("/").get_json() == {"due": 0, "counts": {}}


class TestExecutorAfterTheCommit:
    def test_the_executor_finds_the_event_and_its_effect_committed(
        self, project: str, db: firestore.Client
    ) -> None:
        """The executor of a task enqueued by a handler runs only after the event's
        transaction committed: reading Firestore from its own client, it finds the event's
        ledger record `completed` and the handler's write present."""
        env = {**server_env(project), "STRIPE_HANDLER_MODULES": "tests.pipeline_handlers"}
        function = FunctionServer(env).start()
        event = make_event("test.observe", {"id": "obj_observe"})
        try:
            response = function.post(event)
        finally:
            function.stop()
        assert response.status_code == 200, response.text
        observed = db.collection("test_observed").document(event["id"]).get().to_dict()
        assert observed == {
            "ledger_status": "completed",
            "effect_exists": True,
            "run_event_id": event["id"],
        }
