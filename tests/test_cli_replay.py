"""`stripe-ledger replay`: stored events through the live path, end to end through the console
script against the emulator, and a replay racing a live redelivery over every interleaving.

Seeded events go through the real `process_event` with handlers that fail; the console
script then loads `tests.handlers_for_tests`, whose `test.counter` handler counts each
event's effect in `test_effects/{event_id}` (2 would mean applied twice).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore
from test_utils.orchestrate import orchestrate

from stripe_ledger.config import Settings
from stripe_ledger.pipeline import process_event
from stripe_ledger.replay import replay_event
from stripe_ledger.service import WebhookService
from stripe_ledger.verify import parse_event
from tests.cli_support import (
    effects,
    project_state,
    record,
    run_cli,
    seed,
    seeding_registry,
)
from tests.support import make_event

pytestmark = pytest.mark.emulator

# The fields of the function's per-delivery log line, which every per-event line carries.
EVENT_LINE_FIELDS = {"severity", "message", "event_id", "event_type", "status", "duration_ms"}


class TestReplayByStatus:
    def test_dead_events_are_replayed_with_a_progress_bar(
        self, project: str, db: firestore.Client
    ) -> None:
        """`--status dead` replays every dead event once (effect 1 each), counts the replay
        in the record, and draws a progress bar on a terminal."""
        events = [make_event("test.counter") for _ in range(25)]
        seed(db, events, fail=True, max_attempts=1)
        assert {record(db, e["id"])["status"] for e in events} == {"dead"}

        run = run_cli("replay", "--status", "dead", "--json", project=project, tty=True)
        assert run.returncode == 0, run
        summary = run.json()
        assert summary["selected"] == 25
        assert summary["counts"] == {"completed": 25}
        assert {e["status_before"] for e in summary["events"]} == {"dead"}
        assert "Replaying" in run.stderr
        assert "25/25" in run.stderr  # the bar's last frame: M of N done
        for event in events:
            stored = record(db, event["id"])
            assert (stored["status"], stored["attempts"], stored["replays"]) == ("completed", 2, 1)
            assert stored["last_note"].startswith("replayed by stripe-ledger (user ")
            assert effects(db, event["id"]) == 1

    def test_dry_run_writes_nothing_then_the_replay_logs_each_event(
        self, project: str, db: firestore.Client
    ) -> None:
        """`--dry-run` lists what would be replayed and leaves every document as it was; the
        real run then writes one JSON line per event with the delivery line's fields."""
        events = [make_event("test.counter") for _ in range(3)]
        seed(db, events, fail=True)
        before = project_state(db)

        dry = run_cli("replay", "--status", "failed", "--dry-run", "--json", project=project)
        assert dry.returncode == 0, dry
        assert dry.json()["counts"] == {"would_replay": 3}
        assert project_state(db) == before

        run = run_cli("replay", "--status", "failed", "--type", "test.counter", project=project)
        assert run.returncode == 0, run
        assert "replay: 3 completed" in run.stdout
        lines = run.log_lines()
        per_event = [line for line in lines if line.get("event_id")]
        assert sorted(line["event_id"] for line in per_event) == sorted(e["id"] for e in events)
        for line in per_event:
            assert set(line) >= EVENT_LINE_FIELDS, line
            assert (line["severity"], line["status"], line["attempt"]) == ("INFO", "completed", 2)
            assert line["event_type"] == "test.counter"
        assert lines[-1]["message"] == "replay finished: 3 completed"

    def test_failures_and_unknown_events_exit_1(
        self, project: str, db: firestore.Client, tmp_path: Path
    ) -> None:
        """An event whose fault is still there fails again (recorded, exit 1); an ID the
        ledger lacks is reported missing."""
        fault = tmp_path / "fault"
        fault.touch()
        event = make_event("test.counter", {"id": "obj_1", "fail_while_exists": str(fault)})
        seed(db, [event], fail=True)
        run = run_cli("replay", event["id"], "evt_not_in_ledger", "--json", project=project)
        assert run.returncode == 1, run
        outcomes = {e["event_id"]: e for e in run.json()["events"]}
        assert outcomes[event["id"]]["outcome"] == "failed"
        assert outcomes[event["id"]]["error"].startswith("RuntimeError: injected fault")
        assert outcomes["evt_not_in_ledger"]["outcome"] == "missing"
        stored = record(db, event["id"])
        assert (stored["status"], stored["attempts"]) == ("failed", 2)
        assert effects(db, event["id"]) == 0
        errors = [line for line in run.log_lines() if line["severity"] == "ERROR"]
        assert {line.get("event_id") for line in errors} >= {event["id"], "evt_not_in_ledger"}


class TestReplayRacingALiveRedelivery:
    """A replay and a live redelivery of the same failed event, over every interleaving of
    their `# pragma: SYNCPOINT ledger` turns (see tests/test_ledger.py).

    `orchestrate` takes each contender's turns from a serial run, in which the second one
    finds the event settled after a single read; so the race is run in both orders, for
    each contender to be explored step by step.
    """

    SCENARIOS = 20  # per order; more than the interleavings of today's syncpoints

    def test_the_event_is_applied_once(self, db: firestore.Client) -> None:
        """Whatever the interleaving: one of them completes the event, the other sees it in
        flight or done, the effect is applied exactly once, and each side wins in some."""
        old = int((datetime.now(UTC) - timedelta(hours=1)).timestamp())
        events = [make_event("test.counter", created=old) for _ in range(2 * self.SCENARIOS)]
        seed(db, events, fail=True)
        winners = set()
        halves = (events[: self.SCENARIOS], events[self.SCENARIOS :])
        for replay_first, batch in zip((True, False), halves, strict=True):
            results = _race(db, batch, replay_first=replay_first)
            assert 4 < len(results) <= self.SCENARIOS
            for scenario, outcomes in results.items():
                event_id = batch[scenario]["id"]
                # The loser saw the winner's claim (in flight) or its result: a duplicate for
                # the live path, `skipped` (already completed) for the replay.
                [winner] = [who for who, outcome in outcomes.items() if outcome == "completed"]
                loser = "live" if winner == "replay" else "replay"
                assert outcomes[loser] in ("in_flight", "duplicate", "skipped"), outcomes
                assert effects(db, event_id) == 1, outcomes
                assert record(db, event_id)["status"] == "completed"
                winners.add(winner)
        assert winners == {"replay", "live"}


def _race(
    db: firestore.Client, batch: list[dict[str, Any]], *, replay_first: bool
) -> dict[int, dict[str, str]]:
    """Race `replay_event` against `process_event` on batch[n] in interleaving n; each
    interleaving's outcomes by contender."""
    registry = seeding_registry(fail=False)
    service = WebhookService(Settings(webhook_secrets=()), db, registry)
    ledger = service.ledger
    results: dict[int, dict[str, str]] = {}

    def contender(name: str, run: Callable[[dict[str, Any]], str]) -> Callable[[], None]:
        scenarios = itertools.count()

        def go() -> None:
            scenario = next(scenarios)  # each contender runs once per interleaving
            results.setdefault(scenario, {})[name] = run(batch[scenario])

        return go

    def replay(event: dict[str, Any]) -> str:
        return replay_event(event["id"], service).outcome

    def live(event: dict[str, Any]) -> str:
        received = parse_event(json.dumps(event))
        return process_event(received, db=db, ledger=ledger, registry=registry).outcome.value

    contenders = [contender("replay", replay), contender("live", live)]
    counts = orchestrate(*(contenders if replay_first else contenders[::-1]), name="ledger")
    assert counts[0] >= 4, counts  # the first one really stopped at its syncpoints
    return results
