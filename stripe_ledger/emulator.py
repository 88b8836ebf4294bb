"""Start and stop the official Firestore emulator (Google Cloud CLI) on a free local port.

Used by the test harness, the local development server and the benchmark. `gcloud` starts
the emulator as a child process (a shell script, then Java), so it is started in its own
process group and the whole group is stopped: stopping only `gcloud` would leave Java holding
the port.

As a command, it runs another command with an emulator started for it:

    python -m stripe_ledger.emulator [--rules firestore.rules] -- functions-framework ...
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

__all__ = ["Emulator", "EmulatorError", "free_port", "main", "stop_group"]


class EmulatorError(RuntimeError):
    """The emulator could not be started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Emulator:
    """One emulator process group; a context manager that starts and stops it."""

    def __init__(self, port: int | None = None, rules: Path | None = None) -> None:
        self.port = port or free_port()
        self.rules = rules
        self.host = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="firestore-emulator-", suffix=".log")  # noqa: SIM115

    def start(self, timeout: float = 90.0) -> str:
        """Start the emulator and wait until it answers; return its `host:port`.

        Whatever interrupts the wait (an error, a timeout, Ctrl-C), the emulator is stopped
        before the exception leaves: `with Emulator()` never runs `__exit__` when
        `__enter__` raises, so a half-started emulator would otherwise keep the port.
        """
        self.spawn()
        try:
            return self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start gcloud's emulator in its own process group, without waiting for it."""
        gcloud = shutil.which("gcloud")
        if gcloud is None:
            raise EmulatorError(
                "gcloud is not on PATH: install the Google Cloud CLI and its "
                "cloud-firestore-emulator component, or set FIRESTORE_EMULATOR_HOST"
            )
        if _answers(self.host):
            raise EmulatorError(f"something already listens on {self.host}")
        command = [gcloud, "emulators", "firestore", "start", f"--host-port={self.host}", "--quiet"]
        if self.rules is not None:
            command.append(f"--rules={self.rules}")
        self._process = subprocess.Popen(  # noqa: S603 - a fixed command line
            command, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self._process

    def wait_ready(self, timeout: float = 90.0) -> str:
        """Wait until the spawned emulator answers; EmulatorError if it exits or times out."""
        process = self._process
        assert process is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise EmulatorError(f"the emulator exited early:\n{self.log_tail()}")
            if _answers(self.host):
                return self.host
            time.sleep(0.25)
        raise EmulatorError(
            f"the emulator did not answer within {timeout:.0f} s:\n{self.log_tail()}"
        )

    def alive(self) -> bool:
        """Whether the spawned emulator (gcloud) is still running."""
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Stop the emulator's whole process group (gcloud, its shell and Java)."""
        process, self._process = self._process, None
        if process is None:
            return
        # A second Ctrl-C while stopping must not leave Java running and holding the port.
        with _interrupts_deferred():
            _stop_group(process)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the emulator printed."""
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    stop_group(process)


def stop_group(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group led by `process`, SIGKILL what is left after `grace`
    seconds, and return once no member of the group runs any more (zombies aside)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            process.poll()  # reap the leader, or it counts as alive
            if not _group_alive(process.pid):
                break
            time.sleep(0.05)
        else:
            continue
        break
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


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


def _answers(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=1) as response:
            return bool(response.read().strip() == b"Ok")
    except (OSError, urllib.error.URLError):
        return False


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs. Zombies do not count: an orphan's
    zombie may never be reaped where PID 1 is no init, and it holds no port."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        if int(fields[2]) == pgid and fields[0] not in {"Z", "X"}:
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    """Run a command with FIRESTORE_EMULATOR_HOST pointing at a fresh emulator."""
    parser = argparse.ArgumentParser(
        prog="python -m stripe_ledger.emulator",
        description="Run COMMAND with a Firestore emulator started for it (and stopped after).",
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument("--rules", type=Path, default=None, help="security rules to enforce")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command to run, after --")
    # Stopped with SIGTERM, leave through the `with` below so the emulator is stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with Emulator(args.port, args.rules) as emulator:
        print(f"Firestore emulator on {emulator.host}", file=sys.stderr, flush=True)
        env = dict(os.environ, FIRESTORE_EMULATOR_HOST=emulator.host)
        try:
            return subprocess.call(command, env=env)  # noqa: S603 - the user's own command
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main())
