"""`stripe-ledger events list|show`, `stats`, help and errors: end to end through the installed
console script, against the emulator, each test in its own project.

Argument errors are also checked by calling `cli.main` in this process (the console script
only calls it), which saves a second of interpreter start-up per case.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from google.cloud import firestore

from stripe_ledger import cli, logs
from stripe_ledger.emulator import free_port
from tests.cli_support import SteppingClock, record, run_cli, seed
from tests.support import ROOT, make_event

pytestmark = pytest.mark.emulator


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """`cli.main` reconfigures logging for its process; put this process's back after."""
    root, ours = logging.getLogger(), logs.logger
    saved = (root.handlers[:], root.level, ours.handlers[:], ours.level, ours.propagate)
    yield
    root.handlers, ours.handlers = saved[0], saved[2]
    root.setLevel(saved[1])
    ours.setLevel(saved[3])
    ours.propagate = saved[4]
    logging.captureWarnings(False)


@pytest.fixture
def seeded(db: firestore.Client) -> dict[str, Any]:
    """Seven events through the live path, oldest first: four completed `test.counter`, one
    failed, one dead, one ignored (no handler for its type)."""
    clock = SteppingClock()
    completed = [make_event("test.counter") for _ in range(4)]
    failed, dead = make_event("test.counter"), make_event("test.counter")
    ignored = make_event("test.unhandled")
    seed(db, completed[:2], clock=clock)
    seed(db, [failed], fail=True, clock=clock)
    seed(db, completed[2:], clock=clock)
    seed(db, [dead], fail=True, max_attempts=1, clock=clock)
    seed(db, [ignored], clock=clock)
    newest_first = [ignored, dead, *completed[2:][::-1], failed, *completed[:2][::-1]]
    return {
        "newest_first": [event["id"] for event in newest_first],
        "failed": failed,
        "dead": dead,
        "ignored": ignored,
        "completed": completed,
    }


class TestHelp:
    def test_the_console_script_explains_its_commands(self) -> None:
        """`stripe-ledger --help` names every command and the exit statuses."""
        run = run_cli("--help")
        assert run.returncode == 0, run
        for command in ("events", "replay", "reconcile", "send", "stats"):
            assert command in run.stdout
        assert "Exit status: 0 ok, 1 some events failed, 2 usage or configuration error" in (
            run.stdout
        )

    @pytest.mark.parametrize(
        ("command", "explains"),
        [
            (["events", "list"], "newest first"),
            (["events", "show"], "exactly as it was received"),
            (["replay"], "racing"),
            (["reconcile"], "30 days"),
            (["send"], "Stripe-Signature"),
            (["stats"], "failure rate"),
        ],
    )
    def test_every_command_has_help(
        self,
        command: list[str],
        explains: str,
        capsys: pytest.CaptureFixture[str],
        restore_logging: None,
    ) -> None:
        """Each command's `--help` exits 0 with its usage, what it does and an example."""
        with pytest.raises(SystemExit) as exited:
            cli.main([*command, "--help"])
        assert exited.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: stripe-ledger {' '.join(command)}")
        assert explains in out

    def test_the_send_example_names_a_fixture_that_exists(
        self, capsys: pytest.CaptureFixture[str], restore_logging: None
    ) -> None:
        """The file in `send --help`'s example is a Stripe event in the repository, so the
        example runs as printed."""
        with pytest.raises(SystemExit):
            cli.main(["send", "--help"])
        [named] = re.findall(r"tests/fixtures/\S+\.json", capsys.readouterr().out)
        path = ROOT / named
        assert path.is_file(), f"send --help names {named}, which does not exist"
        assert json.loads(path.read_text())["object"] == "event"


class TestBadArguments:
    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["events", "list", "--since", "yesterday"], "neither a duration"),
            (["events", "list", "--limit", "0"], "must be at least 1"),
            (["events", "list", "--status", "lost"], "invalid choice"),
            (["replay"], "give event IDs or --status"),
            (["replay", "evt_1", "--status", "dead"], "give event IDs or --status"),
            (["replay", "--status", "completed"], "add --force"),
            (["replay", "evt_1", "--type", "x"], "--type and --since select events"),
            (["send", "/nonexistent/event.json"], "cannot read /nonexistent/event.json"),
            (["reconcile"], "STRIPE_API_KEY is unset"),
            (["reconcile", "--since", "31d"], "more than 30 days ago"),
            (["frobnicate"], "invalid choice"),
        ],
    )
    def test_usage_errors_exit_2_with_one_json_line(
        self,
        argv: list[str],
        message: str,
        capsys: pytest.CaptureFixture[str],
        restore_logging: None,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A bad argument or missing configuration: exit status 2 and one JSON line naming
        the problem, no traceback."""
        monkeypatch.delenv("STRIPE_API_KEY", raising=False)
        try:
            status = cli.main(argv)
        except SystemExit as exited:  # argparse's own checks
            status = int(exited.code or 0)
        captured = capsys.readouterr()
        assert status == 2
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1, captured.err
        entry = json.loads(lines[0])
        assert entry["severity"] in ("ERROR", "CRITICAL")
        assert message in entry["message"]
        assert captured.out == ""

    def test_through_the_console_script(self) -> None:
        """The installed script exits 2 on a bad argument, with one JSON line on stderr."""
        run = run_cli("events", "list", "--since", "tomorrow-ish")
        assert run.returncode == 2, run
        [entry] = run.log_lines()
        assert "--since 'tomorrow-ish'" in entry["message"]
        assert "Traceback" not in run.stderr


class TestEnvironmentErrors:
    def test_no_emulator_listening(self, project: str) -> None:
        """FIRESTORE_EMULATOR_HOST set but nothing listening: exit 2 at once, one line that
        says so (not a minute of client retries and a traceback)."""
        host = f"127.0.0.1:{free_port()}"
        run = run_cli(
            "events", "list", project=project, env={"FIRESTORE_EMULATOR_HOST": host}, timeout=20
        )
        assert run.returncode == 2, run
        [entry] = run.log_lines()
        assert entry["severity"] == "CRITICAL"
        assert (
            f"no Firestore emulator answers at FIRESTORE_EMULATOR_HOST={host}" in (entry["message"])
        )

    def test_no_credentials(self, tmp_path: Any) -> None:
        """Production mode without Application Default Credentials: exit 2, one line."""
        env: dict[str, str | None] = {
            "FIRESTORE_EMULATOR_HOST": None,
            "GOOGLE_APPLICATION_CREDENTIALS": None,
            "HOME": str(tmp_path),
            "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
            "NO_GCE_CHECK": "true",  # google-auth: do not probe a metadata server
            "GCE_METADATA_HOST": "127.0.0.1:9",
        }
        run = run_cli("stats", project="some-project", env=env, timeout=30)
        assert run.returncode == 2, run
        *_, entry = run.log_lines()  # google-auth's own warning may come first, as JSON too
        assert entry["severity"] == "CRITICAL"
        assert "no Google Cloud credentials" in entry["message"]
        assert "Traceback" not in run.stderr


class TestEventsList:
    def test_pages_newest_first_with_cursors(self, project: str, seeded: dict[str, Any]) -> None:
        """`--json` pages: the contract's fields per event, newest first, `next_after` to
        continue with `--after`, null on the last page."""
        first = run_cli("events", "list", "--limit", "3", "--json", project=project)
        assert first.returncode == 0, first
        page = first.json()
        assert set(page) == {"events", "next_after"}
        assert [e["id"] for e in page["events"]] == seeded["newest_first"][:3]
        assert {"id", "type", "status", "attempts", "received_at", "last_error"} <= set(
            page["events"][0]
        )
        assert "payload" not in page["events"][0]
        assert page["next_after"] == seeded["newest_first"][2]

        ids = [e["id"] for e in page["events"]]
        while page["next_after"]:
            args = ["events", "list", "--limit", "3", "--after", page["next_after"], "--json"]
            run = run_cli(*args, project=project)
            assert run.returncode == 0, run
            page = run.json()
            ids += [e["id"] for e in page["events"]]
        assert ids == seeded["newest_first"]

    def test_filters_combine(self, project: str, seeded: dict[str, Any]) -> None:
        """`--status`, `--type` and `--since` narrow the listing together."""
        filters = ["--status", "failed", "--type", "test.counter", "--since", "1d"]
        run = run_cli("events", "list", *filters, "--json", project=project)
        assert run.returncode == 0, run
        [event] = run.json()["events"]
        assert (event["id"], event["status"], event["attempts"]) == (
            seeded["failed"]["id"],
            "failed",
            1,
        )
        assert event["last_error"].startswith("RuntimeError: injected fault")

    def test_table(self, project: str, seeded: dict[str, Any]) -> None:
        """Without `--json`: a table with the event's ID, type, status and last error."""
        run = run_cli("events", "list", "--status", "dead", project=project)
        assert run.returncode == 0, run
        header, row = run.stdout.splitlines()[:2]
        for column in ("event ID", "type", "status", "attempts", "received (UTC)", "last error"):
            assert column in header
        assert seeded["dead"]["id"] in row
        assert "dead" in row
        assert "RuntimeError: injected fault" in row


class TestEventsShow:
    def test_record_and_payload(
        self, project: str, db: firestore.Client, seeded: dict[str, Any]
    ) -> None:
        """`show --payload --json`: the record's fields and the body exactly as received."""
        event = seeded["failed"]
        run = run_cli("events", "show", event["id"], "--payload", "--json", project=project)
        assert run.returncode == 0, run
        shown = run.json()
        assert shown["id"] == event["id"]
        assert (shown["status"], shown["type"], shown["attempts"]) == ("failed", event["type"], 1)
        assert shown["payload"] == json.dumps(event)
        stored = record(db, event["id"])
        assert shown["received_at"] == stored["received_at"].isoformat()

        table = run_cli("events", "show", event["id"], project=project)
        assert table.returncode == 0, table
        assert "last_error" in table.stdout
        assert "payload" not in table.stdout

    def test_unknown_event(self, project: str, db: firestore.Client) -> None:
        """An event the ledger does not hold: exit 1 and one line saying so."""
        run = run_cli("events", "show", "evt_unknown", project=project)
        assert run.returncode == 1, run
        [entry] = run.log_lines()
        assert entry["message"] == "evt_unknown is not in the ledger"


class TestStats:
    def test_counts_failure_rate_and_oldest_unfinished(
        self, project: str, seeded: dict[str, Any]
    ) -> None:
        """Counts by status and by type, failed+dead over decided events, and the oldest
        event not applied yet."""
        run = run_cli("stats", "--since", "1d", "--json", project=project)
        assert run.returncode == 0, run
        stats = run.json()
        assert stats["total"] == 7
        assert stats["by_status"] == {
            "processing": 0,
            "completed": 4,
            "ignored": 1,
            "failed": 1,
            "dead": 1,
        }
        assert stats["by_type"] == {
            "test.counter": {"completed": 4, "failed": 1, "dead": 1},
            "test.unhandled": {"ignored": 1},
        }
        assert stats["failure_rate"] == round(2 / 6, 4)
        assert stats["oldest_unfinished"]["id"] == seeded["failed"]["id"]

        table = run_cli("stats", project=project)
        assert table.returncode == 0, table
        assert "7 events received since" in table.stdout
        assert "failure rate: 33.33%" in table.stdout
        assert f"oldest unfinished: {seeded['failed']['id']}" in table.stdout
