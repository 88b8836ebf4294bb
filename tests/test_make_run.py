"""`make run`, driven as a user drives it: started, stopped by a signal at several moments
(start-up included), and nothing of it left listening or running afterwards.

Every run reuses the same two ports, so a run that left anything behind makes the next one
fail. Signals go to the whole process group, as a terminal's Ctrl-C (SIGINT) and hang-up
(SIGHUP) do, or to make's process alone, as `kill` does (SIGTERM). Errors are checked to be
one line that says what to do, with no traceback.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from stripe_ledger.devserver import DEVELOPMENT_SECRET
from stripe_ledger.emulator import free_port
from tests.support import ROOT, make_event, sign

pytestmark = pytest.mark.e2e

PORT, EMULATOR_PORT = free_port(), free_port()
READY = re.compile(
    r"^listening on http://127\.0\.0\.1:(\d+)/, Firestore emulator on 127\.0\.0\.1:(\d+), "
    r"signing secret: (the development one|from STRIPE_WEBHOOK_SECRET)$"
)


class MakeRun:
    """`make run` in a session of its own, its output collected line by line."""

    def __init__(self, env: dict[str, str] | None = None, **variables: str) -> None:
        self.env = {**os.environ, **(env or {})}
        self.env.pop("FIRESTORE_EMULATOR_HOST", None)
        self.variables = {"PORT": str(PORT), "EMULATOR_PORT": str(EMULATOR_PORT), **variables}
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> MakeRun:
        command = ["make", "--no-print-directory", "-C", str(ROOT), "run"]
        command += [f"{name}={value}" for name, value in self.variables.items()]
        self.process = subprocess.Popen(
            command,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._collect, daemon=True).start()
        return self

    def _collect(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            assert self.process is not None
            if self.process.poll() is not None and not any(
                re.search(pattern, line) for line in self.lines
            ):
                raise AssertionError("make run ended:\n" + "\n".join(self.lines))
            time.sleep(0.1)
        raise AssertionError(f"no line matched {pattern!r}:\n" + "\n".join(self.lines[-40:]))

    def signal(self, signum: int, group: bool = True) -> None:
        assert self.process is not None
        if group:
            os.killpg(self.process.pid, signum)
        else:
            os.kill(self.process.pid, signum)

    def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        return self.process.wait(timeout)


def deliver(event: dict[str, object], secret: str) -> dict[str, object]:
    """POST a signed event and retry on 409 and 503 as Stripe does (the first delivery to a
    cold function on a busy machine can outlast the Firestore timeout); the final answer."""
    payload = json.dumps(event)
    deadline = time.monotonic() + 120
    while True:
        response = requests.post(
            f"http://127.0.0.1:{PORT}/",
            data=payload,
            headers={"Stripe-Signature": sign(payload, secret)},
            timeout=60,
        )
        if response.status_code not in (409, 503) or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            answer: dict[str, object] = response.json()
            return answer
        time.sleep(2)


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def leftovers() -> list[str]:
    """Command lines of live processes serving either port (the emulator's gcloud and Java,
    functions-framework)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and (f"127.0.0.1:{EMULATOR_PORT}" in text or f"--port={PORT}" in text):
            found.append(text)
    return found


def assert_nothing_left() -> None:
    deadline = time.monotonic() + 5  # the last group may take a moment to be reaped
    while (accepts(PORT) or accepts(EMULATOR_PORT) or leftovers()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not accepts(PORT), f"something still listens on {PORT}"
    assert not accepts(EMULATOR_PORT), f"something still listens on {EMULATOR_PORT}"
    assert leftovers() == []


@pytest.fixture
def make_run() -> Iterator[list[MakeRun]]:
    runs: list[MakeRun] = []
    yield runs
    for run in runs:  # a failed test must not leave its servers to the next one
        if run.process is not None and run.process.poll() is None:
            run.signal(signal.SIGTERM)
            run.wait(60)


class TestStopsEverythingOnAnySignal:
    @pytest.mark.parametrize(
        ("signum", "delay", "group"),
        [
            (signal.SIGINT, 0.3, True),  # before or while the emulator is spawned
            (signal.SIGINT, 1.2, True),  # the moment the issue reproduced the leak
            (signal.SIGTERM, 3.0, False),  # emulator starting, to make alone (`kill`)
            (signal.SIGHUP, 5.0, True),  # terminal closed during start-up
        ],
    )
    def test_signal_during_start_up(
        self, make_run: list[MakeRun], signum: int, delay: float, group: bool
    ) -> None:
        """A signal at any moment of start-up stops what was started; the ports are free."""
        run = MakeRun().start()
        make_run.append(run)
        time.sleep(delay)
        run.signal(signum, group)
        run.wait(60)
        assert not [line for line in run.lines if "Traceback" in line], run.lines
        assert_nothing_left()

    @pytest.mark.parametrize(("signum", "group"), [(signal.SIGINT, True), (signal.SIGTERM, False)])
    def test_signal_once_ready(self, make_run: list[MakeRun], signum: int, group: bool) -> None:
        """One ready line with the URL, the emulator and the secret's origin; a signed event
        is answered; then a signal stops everything."""
        run = MakeRun().start()
        make_run.append(run)
        ready = run.wait_for(READY.pattern)
        assert ready.groups() == (str(PORT), str(EMULATOR_PORT), "the development one")
        assert sum(bool(READY.match(line)) for line in run.lines) == 1
        answer = deliver(make_event("nobody.handles.this"), DEVELOPMENT_SECRET)
        # `duplicate` when a first attempt was recorded but answered 503 (a slow cold start):
        # Stripe's retry then finds the event settled.
        assert answer["status"] in ("ignored", "duplicate")
        run.signal(signum, group)
        run.wait(60)
        assert_nothing_left()


class TestOutboxRunsInTheBackground:
    def test_a_task_whose_first_run_failed_is_run_again(self, make_run: list[MakeRun]) -> None:
        """As Cloud Scheduler in production: a task whose first run (in the webhook) failed
        is run again by the background runner once due, with no `stripe-ledger outbox run`."""
        secret = "whsec_make_run_test_0123456789"
        run = MakeRun(
            env={
                "STRIPE_WEBHOOK_SECRET": secret,
                "STRIPE_HANDLER_MODULES": "tests.outbox_handlers",
            },
            OUTBOX_INTERVAL="2",
        ).start()
        make_run.append(run)
        ready = run.wait_for(READY.pattern)
        assert ready[3] == "from STRIPE_WEBHOOK_SECRET"
        tasks = [{"key": "make-run-1", "payload": {"fail_runs": 1}}]
        answer = deliver(make_event("test.outbox", {"id": "obj_run1", "tasks": tasks}), secret)
        assert answer["status"] == "completed"
        run.wait_for(r'"task_status": "failed"', timeout=30)
        run.wait_for(r'"task_status": "done"', timeout=120)  # after the 30 s backoff
        run.signal(signal.SIGINT)
        run.wait(60)
        assert_nothing_left()


def test_development_secret_is_the_senders() -> None:
    """`make run` checks the secret `stripe-ledger send` signs with by default."""
    from stripe_ledger.webhook_sender import LOCAL_SECRET

    assert DEVELOPMENT_SECRET == LOCAL_SECRET


class TestErrorsAreOneLine:
    def one_line(self, run: MakeRun) -> str:
        assert run.wait(60) != 0
        ours = [line for line in run.lines if line.startswith("make run: ")]
        assert len(ours) == 1, run.lines
        assert not [line for line in run.lines if "Traceback" in line], run.lines
        return ours[0]

    def test_empty_secret_is_refused(self, make_run: list[MakeRun]) -> None:
        run = MakeRun(env={"STRIPE_WEBHOOK_SECRET": ""}).start()
        make_run.append(run)
        line = self.one_line(run)
        assert "STRIPE_WEBHOOK_SECRET is set but empty" in line
        assert "unset it to use the development secret" in line

    def test_busy_port(self, make_run: list[MakeRun]) -> None:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
            sock.bind(("127.0.0.1", PORT))
            sock.listen()
            run = MakeRun().start()
            make_run.append(run)
            line = self.one_line(run)
        assert f"port {PORT} on 127.0.0.1 is in use" in line
        assert f"make run PORT={PORT + 1}" in line

    def test_gcloud_missing(self, make_run: list[MakeRun], tmp_path: Path) -> None:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "make").symlink_to("/usr/bin/make")
        run = MakeRun(env={"PATH": str(bin_dir)}).start()
        make_run.append(run)
        line = self.one_line(run)
        assert "gcloud is not on PATH" in line
        assert "gcloud components install cloud-firestore-emulator" in line
        assert "FIRESTORE_EMULATOR_HOST" not in line

    def test_open_interface_with_the_published_secret(self, make_run: list[MakeRun]) -> None:
        run = MakeRun(HOST="0.0.0.0").start()  # noqa: S104 - the setting under test
        make_run.append(run)
        line = self.one_line(run)
        assert "HOST=0.0.0.0 would accept events signed with the published" in line
