"""`stripe-ledger send` and `replay` against the function served over real HTTP
(functions-framework, emulator), and the function's own log lines.

One function serves the module, in a project of its own; each test uses fresh event IDs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore
from test_utils.system import EmulatorCreds

from tests.cli_support import effects, project_state, record, run_cli
from tests.support import SECRET, UNKNOWN_SECRET, FunctionServer, make_event

pytestmark = [pytest.mark.emulator, pytest.mark.e2e]


@pytest.fixture(scope="module")
def function_project(emulator_host: str) -> str:
    return f"stripe-ledger-cli-function-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def server(function_project: str) -> Iterator[FunctionServer]:
    function = FunctionServer(
        {
            "GOOGLE_CLOUD_PROJECT": function_project,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "STRIPE_HANDLER_MODULES": "tests.handlers_for_tests",
            "STRIPE_MAX_ATTEMPTS": "3",
        }
    ).start()
    yield function
    function.stop()


@pytest.fixture(scope="module")
def fdb(function_project: str) -> firestore.Client:
    return firestore.Client(project=function_project, credentials=EmulatorCreds())


def event_file(tmp_path: Path, event: dict[str, Any]) -> Path:
    path = tmp_path / f"{event['id']}.json"
    path.write_text(json.dumps(event, indent=2))
    return path


def lines_for(server: FunctionServer, event_id: str) -> list[dict[str, Any]]:
    return [entry for entry in server.log_entries() if entry.get("event_id") == event_id]


class TestSend:
    def test_a_signed_payload_is_processed_once(
        self, server: FunctionServer, fdb: firestore.Client, tmp_path: Path
    ) -> None:
        """`send` signs the file like Stripe (with STRIPE_WEBHOOK_SECRET's secret): the
        function completes it, answers a second send as a duplicate; `--new-id` sends it
        again as a new event."""
        event = make_event("test.counter")
        path = event_file(tmp_path, event)
        env = {"STRIPE_WEBHOOK_SECRET": SECRET}
        first = run_cli("send", str(path), "--url", server.url, env=env)
        assert first.returncode == 0, first
        status_line, body = first.stdout.split("\n", 1)
        assert status_line == "HTTP 200"
        assert json.loads(body) == {"status": "completed", "event_id": event["id"]}
        again = run_cli("send", str(path), "--url", server.url, "--secret", SECRET)
        assert again.returncode == 0, again
        assert json.loads(again.stdout.split("\n", 1)[1])["status"] == "duplicate"
        assert effects(fdb, event["id"]) == 1

        fresh = run_cli("send", str(path), "--url", server.url, "--secret", SECRET, "--new-id")
        assert fresh.returncode == 0, fresh
        new_id = json.loads(fresh.stdout.split("\n", 1)[1])["event_id"]
        assert new_id != event["id"]
        assert record(fdb, new_id)["status"] == "completed"
        [entry] = fresh.log_lines()
        assert (entry["event_id"], entry["http_status"]) == (new_id, 200)

    def test_a_wrong_secret_is_refused(
        self, server: FunctionServer, fdb: firestore.Client, tmp_path: Path
    ) -> None:
        """Signed with a secret the function does not know: HTTP 400 printed, exit 1."""
        event = make_event("test.counter")
        path = event_file(tmp_path, event)
        run = run_cli("send", str(path), "--url", server.url, "--secret", UNKNOWN_SECRET)
        assert run.returncode == 1, run
        assert run.stdout.startswith("HTTP 400\n")
        assert fdb.collection("stripe_events").document(event["id"]).get().exists is False


class TestReplayAfterTheFaultIsFixed:
    def test_a_failed_event_completes_once(
        self, server: FunctionServer, fdb: firestore.Client, tmp_path: Path, function_project: str
    ) -> None:
        """A live delivery fails (the handler's fault); once the fault is fixed, `replay`
        completes the event once: Stripe's later retry and a second replay change nothing.
        `--force` then runs its handlers again, and the record says so."""
        fault = tmp_path / "fault"
        fault.touch()
        event = make_event("test.counter", {"id": "obj_1", "fail_while_exists": str(fault)})
        path = event_file(tmp_path, event)
        sent = run_cli("send", str(path), "--url", server.url, "--secret", SECRET)
        assert sent.returncode == 1, sent
        assert sent.stdout.startswith("HTTP 500\n")
        assert (record(fdb, event["id"])["status"], effects(fdb, event["id"])) == ("failed", 0)

        before = project_state(fdb)
        dry = run_cli("replay", event["id"], "--dry-run", "--json", project=function_project)
        assert dry.json()["counts"] == {"would_replay": 1}
        assert project_state(fdb) == before

        fault.unlink()
        replayed = run_cli("replay", event["id"], "--json", project=function_project)
        assert replayed.returncode == 0, replayed
        [result] = replayed.json()["events"]
        assert (result["status_before"], result["outcome"], result["attempt"]) == (
            "failed",
            "completed",
            2,
        )
        stored = record(fdb, event["id"])
        assert (stored["status"], stored["attempts"]) == ("completed", 2)
        assert "replays" not in stored  # replaying a failed event is not a forced re-run
        assert effects(fdb, event["id"]) == 1

        assert server.post(event).json() == {"status": "duplicate", "event_id": event["id"]}
        again = run_cli("replay", event["id"], "--json", project=function_project)
        assert again.returncode == 0, again
        assert again.json()["events"][0]["outcome"] == "skipped"
        assert effects(fdb, event["id"]) == 1

        forced = run_cli("replay", event["id"], "--force", "--json", project=function_project)
        assert forced.returncode == 0, forced
        assert forced.json()["events"][0]["outcome"] == "completed"
        stored = record(fdb, event["id"])
        assert (stored["status"], stored["replays"]) == ("completed", 1)
        assert stored["last_note"].startswith("replayed with --force by stripe-ledger")
        assert effects(fdb, event["id"]) == 2  # forced: the handlers ran again, on purpose


class TestFunctionLogLines:
    TRACE = "0af7651916cd43dd8448eb211c80319c"

    @pytest.mark.parametrize(
        "header",
        [
            {"X-Cloud-Trace-Context": f"{TRACE}/1;o=1"},
            {"traceparent": f"00-{TRACE}-b7ad6b7169203331-01"},
        ],
    )
    def test_a_delivery_line_carries_the_fields(
        self, server: FunctionServer, function_project: str, header: dict[str, str]
    ) -> None:
        """One JSON line per delivery with severity, message, event ID and type, status,
        attempt, duration and the request's trace as Cloud Logging reads it."""
        event = make_event("test.counter")
        assert server.post(event, headers=header).status_code == 200
        [line] = lines_for(server, event["id"])
        assert line["severity"] == "INFO"
        assert line["message"] == f"event {event['id']} completed"
        assert (line["event_type"], line["status"], line["attempt"]) == (
            "test.counter",
            "completed",
            1,
        )
        assert isinstance(line["duration_ms"], float)
        assert line["logging.googleapis.com/trace"] == (
            f"projects/{function_project}/traces/{self.TRACE}"
        )

    def test_a_failure_is_an_error_line(self, server: FunctionServer, tmp_path: Path) -> None:
        """A failed delivery's line is ERROR, with the attempt and the handler's error."""
        fault = tmp_path / "fault"
        fault.touch()
        event = make_event("test.counter", {"id": "obj_2", "fail_while_exists": str(fault)})
        assert server.post(event).status_code == 500
        [line] = lines_for(server, event["id"])
        assert (line["severity"], line["status"], line["attempt"]) == ("ERROR", "failed", 1)
        assert line["error"].startswith("RuntimeError: injected fault")
        assert "duration_ms" in line
