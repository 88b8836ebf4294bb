"""The Firebase Auth emulator for the tests: started on free local ports, stopped after.

It is firebase-tools' own emulator (`firebase emulators:start --only auth`), installed by
`make install` into `.node/` at the version the Makefile pins. The `auth_emulator` fixture
yields its `host:port` and points FIREBASE_AUTH_EMULATOR_HOST at it for the session (the one
already in FIREBASE_AUTH_EMULATOR_HOST is used as it is); `auth_app` gives each test a
firebase-admin app in a project of its own, since the emulator keeps each project's users
apart. When the emulator cannot start, the tests that need it error, never skip.

Started offline: the project is a `demo-` one (no login, no Google API), CI=1 skips the
CLI's message-of-the-day fetch, NO_UPDATE_NOTIFIER=1 stops update-notifier from spawning a
detached checker (which would escape the process group), and TMPDIR and XDG_CONFIG_HOME point
into a private directory, so the hub's locator file and the CLI's settings stay out of /tmp
and the home directory. Start-up is CPU-bound (the emulator compiles its API's JSON-schema
validators): 20 to 60 s on a busy 2-core machine, hence the generous timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import firebase_admin
import pytest

from stripe_ledger.emulator import EmulatorError, free_port, stop_group

ROOT = Path(__file__).resolve().parent.parent
FIREBASE = ROOT / ".node" / "node_modules" / ".bin" / "firebase"
PROJECT = "demo-test"

__all__ = ["FIREBASE", "PROJECT", "AuthEmulator", "auth_app", "auth_emulator"]


class AuthEmulator:
    """One `firebase emulators:start --only auth` process group; a context manager."""

    def __init__(self, port: int | None = None, firebase: Path = FIREBASE) -> None:
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.firebase = firebase
        self._process: subprocess.Popen[bytes] | None = None
        # firebase.json, the log, the CLI's TMPDIR and settings: made by spawn(), gone at stop().
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def start(self, timeout: float = 180.0) -> str:
        """Start the emulator and wait until it answers; return its `host:port`.

        Whatever interrupts the wait, the emulator is stopped before the exception leaves.
        """
        try:
            self.spawn()
            return self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the emulator in its own process group, without waiting for it."""
        if not self.firebase.exists():
            raise EmulatorError(
                f"firebase-tools is not installed ({self.firebase} is missing): run "
                "`make install`, or set FIREBASE_AUTH_EMULATOR_HOST"
            )
        if shutil.which("node") is None:
            raise EmulatorError("node is not on PATH: firebase-tools needs Node.js 20 or later")
        if _answers(self.host):
            raise EmulatorError(f"something already listens on {self.host}")
        self._dir = tempfile.TemporaryDirectory(prefix="auth-emulator-")
        work = Path(self._dir.name)
        # The hub and the logging emulator start with auth: free ports for them too, so they
        # never take firebase-tools' defaults (4400, 4500) from a developer's own emulators.
        config = {
            "emulators": {
                "auth": {"host": "127.0.0.1", "port": self.port},
                "hub": {"host": "127.0.0.1", "port": free_port()},
                "logging": {"host": "127.0.0.1", "port": free_port()},
                "ui": {"enabled": False},
            }
        }
        (work / "firebase.json").write_text(json.dumps(config))
        (work / "config").mkdir(exist_ok=True)
        env = dict(
            os.environ,
            CI="1",
            NO_UPDATE_NOTIFIER="1",
            TMPDIR=str(work),
            XDG_CONFIG_HOME=str(work / "config"),
        )
        command = [
            str(self.firebase),
            "emulators:start",
            "--only=auth",
            f"--project={PROJECT}",
            "--non-interactive",
        ]
        with (work / "emulator.log").open("ab") as log:
            self._process = subprocess.Popen(
                command,
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self._process

    def wait_ready(self, timeout: float = 180.0) -> str:
        """Wait until the spawned emulator answers; EmulatorError if it exits or times out."""
        process = self._process
        assert process is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise EmulatorError(f"the Auth emulator exited early:\n{self.log_tail()}")
            if _answers(self.host):
                return self.host
            time.sleep(0.25)
        raise EmulatorError(
            f"the Auth emulator did not answer within {timeout:.0f} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the emulator's whole process group and remove its private directory."""
        process, self._process = self._process, None
        if process is not None:
            # A second Ctrl-C while stopping must not leave node holding the port.
            with _interrupts_deferred():
                stop_group(process)
        work, self._dir = self._dir, None
        if work is not None:
            work.cleanup()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the emulator printed."""
        if self._dir is None:
            return ""
        try:
            text = (Path(self._dir.name) / "emulator.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> AuthEmulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _answers(host: str) -> bool:
    """Whether the Auth emulator answers on `host`: its root says `authEmulator.ready`."""
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=1) as response:
            body = json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return isinstance(body, dict) and body.get("authEmulator", {}).get("ready") is True


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session")
def auth_emulator() -> Iterator[str]:
    """`host:port` of a running Auth emulator: FIREBASE_AUTH_EMULATOR_HOST's, or our own.

    firebase-admin reads FIREBASE_AUTH_EMULATOR_HOST when an app first uses auth, so it is
    set for the whole session.
    """
    existing = os.environ.get("FIREBASE_AUTH_EMULATOR_HOST")
    if existing:
        yield existing
        return
    emulator = AuthEmulator()
    emulator.start()  # raises EmulatorError (an error, never a skip) if it cannot start
    os.environ["FIREBASE_AUTH_EMULATOR_HOST"] = emulator.host
    try:
        yield emulator.host
    finally:
        os.environ.pop("FIREBASE_AUTH_EMULATOR_HOST", None)
        emulator.stop()


@pytest.fixture
def auth_app(auth_emulator: str) -> Iterator[firebase_admin.App]:
    """A firebase-admin app on the emulator, in a project no other test uses.

    No credentials: with FIREBASE_AUTH_EMULATOR_HOST set, firebase-admin sends the emulator
    a fake token; the project ID must be given (here, or by GOOGLE_CLOUD_PROJECT).
    """
    project = f"demo-{secrets.token_hex(6)}"
    app = firebase_admin.initialize_app(options={"projectId": project}, name=project)
    try:
        yield app
    finally:
        firebase_admin.delete_app(app)
