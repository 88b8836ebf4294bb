"""Helpers for the `stripe-ledger` tests: run the installed console script, seed the ledger
through its real write path, and snapshot a project to prove that nothing was written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.cloud import firestore

from stripe_ledger.config import Settings
from stripe_ledger.context import HandlerContext
from stripe_ledger.ledger import EventLedger
from stripe_ledger.outcomes import Delivery
from stripe_ledger.pipeline import process_event
from stripe_ledger.registry import HandlerRegistry
from stripe_ledger.verify import parse_event
from tests.support import ROOT

CLI = Path(sys.executable).parent / "stripe-ledger"
EFFECTS = "test_effects"  # where tests.handlers_for_tests counts each event's effect
_UNSET = ("STRIPE_WEBHOOK_SECRET", "STRIPE_API_KEY", "STRIPE_API_BASE", "FORCE_COLOR")
_TTY_ENV = ("TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS")


@dataclass(frozen=True)
class CliRun:
    """One run of the console script."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def log_lines(self) -> list[dict[str, Any]]:
        """Every stderr line, each parsed as one JSON object (fails if one is not)."""
        return [json.loads(line) for line in self.stderr.splitlines() if line.strip()]

    def __str__(self) -> str:
        return f"{self.args} -> {self.returncode}\n{self.stdout}\n{self.stderr}"


def run_cli(
    *args: str,
    project: str | None = None,
    env: Mapping[str, str | None] | None = None,
    tty: bool = False,
    timeout: float = 120,
) -> CliRun:
    """Run `stripe-ledger ARGS` in the project's directory, as an operator would.

    The environment is the test's (FIRESTORE_EMULATOR_HOST), with the test's project, the
    test handlers, and no signing secret (the tool must not need one); `env` overrides it
    (None removes a variable). `tty` makes stderr count as a terminal (rich's
    TTY_COMPATIBLE), so the progress bar is drawn.
    """
    environ = {k: v for k, v in os.environ.items() if k not in _UNSET + _TTY_ENV}
    environ.update(STRIPE_HANDLER_MODULES="tests.handlers_for_tests", PYTHONUNBUFFERED="1")
    if project is not None:
        environ["GOOGLE_CLOUD_PROJECT"] = project
    if tty:
        environ.update(TTY_COMPATIBLE="1", TTY_INTERACTIVE="1", COLUMNS="120")
    for name, value in (env or {}).items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    completed = subprocess.run(
        [str(CLI), *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliRun(tuple(args), completed.returncode, completed.stdout, completed.stderr)


@dataclass
class SteppingClock:
    """A clock that moves one second per reading, so seeded records have distinct times."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(hours=1))

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def seeding_registry(*, fail: bool) -> HandlerRegistry:
    """`test.counter` as the test handlers count it (`test_effects/{id}.count`), or failing."""
    registry = HandlerRegistry()

    def count(ctx: HandlerContext) -> None:
        ref = ctx.db.collection(EFFECTS).document(ctx.event_id)
        ctx.tx.set(ref, {"count": firestore.Increment(1)}, merge=True)
        if fail:
            raise RuntimeError("injected fault")

    # Registered under the name the served function and the CLI give the same handler
    # (STRIPE_HANDLER_MODULES=tests.handlers_for_tests), as if the function had failed it.
    count.__module__, count.__qualname__ = "tests.handlers_for_tests", "count"
    registry.on("test.counter")(count)
    return registry


def seed(
    db: firestore.Client,
    events: Iterable[Mapping[str, Any]],
    *,
    fail: bool = False,
    max_attempts: int = 5,
    clock: SteppingClock | None = None,
) -> list[Delivery]:
    """Deliver `events` through the live path (`process_event`), with handlers that succeed
    or fail; `fail` with `max_attempts=1` leaves them dead."""
    settings = Settings(webhook_secrets=(), max_attempts=max_attempts)
    ledger = EventLedger(db, settings, clock or SteppingClock())
    registry = seeding_registry(fail=fail)
    return [
        process_event(parse_event(json.dumps(event)), db=db, ledger=ledger, registry=registry)
        for event in events
    ]


def effects(db: firestore.Client, event_id: str) -> int:
    snapshot = db.collection(EFFECTS).document(event_id).get()
    return int(snapshot.get("count")) if snapshot.exists else 0


def record(db: firestore.Client, event_id: str) -> dict[str, Any]:
    found = db.collection("stripe_events").document(event_id).get().to_dict()
    assert found is not None, f"{event_id} is not in the ledger"
    return found


def project_state(db: firestore.Client) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Every document of the project: path -> (update_time, fields)."""
    state = {}
    for collection in db.collections():
        for snapshot in collection.stream():
            state[snapshot.reference.path] = (snapshot.update_time, snapshot.to_dict() or {})
    return state
