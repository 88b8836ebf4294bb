"""`make run`: the function on 127.0.0.1 against its own Firestore emulator, with the outbox
runner called in the background as Cloud Scheduler calls it in production.

Everything it starts (the emulator, whose gcloud starts Java; functions-framework for
`stripe_webhook`; a second one for `run_outbox`) runs in a process group of its own, and
every group is stopped whenever this process ends: Ctrl-C, SIGTERM, SIGHUP or SIGQUIT at any
moment, start-up included, an error, or the death of its parent (`make`). The signal
handlers are installed before anything is spawned, and a signal that arrives while a child
is being spawned is held until that child is recorded, so no child can escape the clean-up.

It prints one line once it is ready (where it listens, where the emulator is, which signing
secret it checks), and every error as one line that says what to do, never a traceback.
Settings, from the environment (the Makefile passes them through):

    HOST             interface to listen on (127.0.0.1; anything else needs a real secret)
    PORT             the function's port (8080)
    EMULATOR_PORT    the Firestore emulator's port (8086)
    OUTBOX_INTERVAL  seconds between outbox runs (10; 0 runs none)
    STRIPE_WEBHOOK_SECRET  unset: the development secret; set: used as it is, never empty
"""

from __future__ import annotations

import signal
import sys

if __name__ == "__main__":
    # Until the real handlers are installed (main), a signal ends the process quietly:
    # nothing has been started yet, and a KeyboardInterrupt traceback is no error.
    def _quit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    for _signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(_signum, _quit)

import contextlib
import ipaddress
import os
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

from stripe_ledger.emulator import Emulator, EmulatorError, free_port, stop_group

__all__ = ["DEVELOPMENT_SECRET", "DevServerError", "Options", "main", "options_from"]

# The same published value as webhook_sender.LOCAL_SECRET (not imported: that pulls in the
# stripe package, and start-up must stay short); for local use only.
DEVELOPMENT_SECRET = "whsec_local_development_only"  # noqa: S105 - public on purpose
ROOT = Path(__file__).resolve().parent.parent
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_BIN = Path(sys.executable).parent


class DevServerError(Exception):
    """`make run` cannot go on; the message is one line saying what to do."""


@dataclass(frozen=True)
class Options:
    """What `make run` serves, read from the environment."""

    host: str
    port: int
    emulator_port: int
    secret: str
    secret_source: str  # "the development one" or "from STRIPE_WEBHOOK_SECRET"
    outbox_interval: float


def _port(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name, "").strip() or str(default)
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise DevServerError(f"{name}={text!r} is not a port number: use 1-65535")
    return int(text)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def options_from(environ: Mapping[str, str]) -> Options:
    """Read and check the settings; DevServerError names the one to fix."""
    host = environ.get("HOST", "").strip() or "127.0.0.1"
    port = _port(environ, "PORT", 8080)
    emulator_port = _port(environ, "EMULATOR_PORT", 8086)
    if port == emulator_port:
        raise DevServerError(f"PORT and EMULATOR_PORT are both {port}: give them two ports")
    interval_text = environ.get("OUTBOX_INTERVAL", "").strip() or "10"
    try:
        interval = float(interval_text)
    except ValueError:
        interval = -1.0
    if interval < 0:
        raise DevServerError(f"OUTBOX_INTERVAL={interval_text!r}: give seconds, or 0 for none")
    if "STRIPE_WEBHOOK_SECRET" not in environ:
        secret, source = DEVELOPMENT_SECRET, "the development one"
    else:
        secret, source = environ["STRIPE_WEBHOOK_SECRET"].strip(), "from STRIPE_WEBHOOK_SECRET"
        if not secret:
            raise DevServerError(
                "STRIPE_WEBHOOK_SECRET is set but empty: set it to the whsec_... secret "
                "(`stripe listen` prints one), or unset it to use the development secret"
            )
        if not all(part.strip().startswith("whsec_") for part in secret.split(",")):
            raise DevServerError(
                "STRIPE_WEBHOOK_SECRET is not a signing secret: give whsec_... "
                "(comma-separated for several), as `stripe listen` or the Dashboard shows it"
            )
    if not _is_loopback(host) and secret == DEVELOPMENT_SECRET:
        raise DevServerError(
            f"HOST={host} would accept events signed with the published development secret "
            "from your network: set STRIPE_WEBHOOK_SECRET too, or leave HOST unset"
        )
    return Options(host, port, emulator_port, secret, source, interval)


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class _Stop(BaseException):
    """A signal asked us to stop (a BaseException, so that no `except Exception` eats it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Supervisor:
    """The children's process groups, and the signals that stop them all."""

    def __init__(self) -> None:
        self._stoppers: list[Callable[[], None]] = []
        self._holding = False
        self._held: int | None = None
        self.stopping = False

    def install(self) -> None:
        for signum in SIGNALS:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            return  # already stopping everything: a second Ctrl-C changes nothing
        if self._holding:
            self._held = self._held or signum
            return
        raise _Stop(signum)

    @contextlib.contextmanager
    def holding_signals(self) -> Iterator[None]:
        """Hold signals while a child is spawned and recorded; deliver them after."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self._held is not None and not self.stopping:
            raise _Stop(self._held)

    def spawn(
        self,
        command: list[str],
        env: Mapping[str, str],
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `command` in a process group of its own, recorded for stop_all()."""
        with self.holding_signals():
            process = subprocess.Popen(  # noqa: S603 - our own command lines
                command, cwd=ROOT, env=env, stdout=stdout, stderr=stderr, start_new_session=True
            )
            self._stoppers.append(lambda: stop_group(process, grace=5.0))
        return process

    def spawn_emulator(self, emulator: Emulator) -> None:
        with self.holding_signals():
            try:
                emulator.spawn()
            finally:
                self._stoppers.append(emulator.stop)

    def stop_all(self) -> None:
        """Stop every group, newest first; signals are ignored meanwhile."""
        self.stopping = True
        while self._stoppers:
            self._stoppers.pop()()


def _accepts(host: str, port: int) -> bool:
    """Whether a server accepts connections on host:port. A TCP connection, not an HTTP
    request: a GET would be answered 405 and logged as a refused delivery."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _wait_serving(process: subprocess.Popen[bytes], host: str, port: int, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DevServerError(
                f"{what} exited while starting (status {process.returncode}); its output is "
                "above: fix what it says, then `make run` again"
            )
        if _accepts(host, port):
            return
        time.sleep(0.2)
    raise DevServerError(
        f"{what} did not listen on {host}:{port} within 60 s: is the machine busy?"
    )


def _forward_without_idle_runs(stream: IO[bytes], out: IO[bytes]) -> None:
    """Copy the outbox runner's output, minus its line for every run that found nothing."""
    for line in stream:
        if b'"outbox run: no task is due"' not in line:
            out.write(line)
            out.flush()


def _tick(url: str, interval: float, done: threading.Event) -> None:
    """POST to the outbox runner every `interval` seconds, as Cloud Scheduler does."""
    while not done.wait(interval):
        request = urllib.request.Request(url, data=b"", method="POST")  # noqa: S310
        with contextlib.suppress(OSError):
            urllib.request.urlopen(request, timeout=120).close()  # noqa: S310 - local URL


def _functions_framework(target: str, host: str, port: int) -> list[str]:
    return [
        str(_BIN / "functions-framework"),
        f"--target={target}",
        f"--source={ROOT / 'main.py'}",
        f"--host={host}",
        f"--port={port}",
    ]


def _emulator_failure(error: EmulatorError) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = lines[-1] if len(lines) > 1 else "no output"
    return (
        f"the Firestore emulator exited while starting ({last}); check that "
        "`gcloud components install cloud-firestore-emulator` is done and Java is on PATH"
    )


def serve(options: Options, supervisor: Supervisor, environ: Mapping[str, str]) -> int:
    """Start everything, print the ready line, and watch until something ends."""
    if not _port_free(options.host, options.port):
        raise DevServerError(
            f"port {options.port} on {options.host} is in use (another `make run`?): stop "
            f"it, or choose another port: make run PORT={options.port + 1}"
        )
    if not _port_free("127.0.0.1", options.emulator_port):
        raise DevServerError(
            f"port {options.emulator_port} on 127.0.0.1 is in use (another `make run`, or an "
            "emulator you started?): stop it, or choose another port: "
            f"make run EMULATOR_PORT={options.emulator_port + 1}"
        )
    emulator = Emulator(options.emulator_port)
    try:
        supervisor.spawn_emulator(emulator)
    except EmulatorError as error:
        if "gcloud is not on PATH" in str(error):
            raise DevServerError(
                "gcloud is not on PATH: install the Google Cloud CLI, then "
                "`gcloud components install cloud-firestore-emulator`"
            ) from error
        raise DevServerError(str(error).splitlines()[0]) from error
    try:
        emulator.wait_ready()
    except EmulatorError as error:
        raise DevServerError(_emulator_failure(error)) from error

    env = {
        **environ,
        "FIRESTORE_EMULATOR_HOST": emulator.host,
        "GOOGLE_CLOUD_PROJECT": environ.get("GOOGLE_CLOUD_PROJECT", "demo-stripe-ledger"),
        "STRIPE_WEBHOOK_SECRET": options.secret,
        "PYTHONUNBUFFERED": "1",
    }
    url = f"http://{options.host}:{options.port}/"
    if ":" in options.host:
        url = f"http://[{options.host}]:{options.port}/"
    webhook = supervisor.spawn(
        _functions_framework("stripe_webhook", options.host, options.port), env
    )
    runner: subprocess.Popen[bytes] | None = None
    done = threading.Event()
    if options.outbox_interval > 0:
        runner_port = free_port()
        runner = supervisor.spawn(
            _functions_framework("run_outbox", "127.0.0.1", runner_port),
            {**env, "THREADS": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert runner.stdout is not None
        threading.Thread(
            target=_forward_without_idle_runs,
            args=(runner.stdout, sys.stdout.buffer),
            daemon=True,
        ).start()
        runner_url = f"http://127.0.0.1:{runner_port}/"
        _wait_serving(runner, "127.0.0.1", runner_port, "the outbox runner (functions-framework)")
        threading.Thread(
            target=_tick, args=(runner_url, options.outbox_interval, done), daemon=True
        ).start()
    _wait_serving(webhook, options.host, options.port, "the function (functions-framework)")
    print(
        f"listening on {url}, Firestore emulator on {emulator.host}, "
        f"signing secret: {options.secret_source}",
        flush=True,
    )
    parent = os.getppid()
    try:
        while True:
            time.sleep(0.3)
            if webhook.poll() is not None:
                raise DevServerError(
                    f"the function server exited (status {webhook.returncode}); its output "
                    "is above: fix it, then `make run` again"
                )
            if runner is not None and runner.poll() is not None:
                raise DevServerError(
                    f"the outbox runner exited (status {runner.returncode}); its output is above"
                )
            if not emulator.alive():
                raise DevServerError(
                    "the Firestore emulator stopped unexpectedly: `make run` again "
                    "(its data was in memory only)"
                )
            if os.getppid() != parent:
                return 1  # whoever started us (make) is gone: stop everything
    finally:
        done.set()


def main(argv: list[str] | None = None) -> int:
    """`python -m stripe_ledger.devserver` (what `make run` runs)."""
    supervisor = Supervisor()
    supervisor.install()  # before anything is spawned
    try:
        options = options_from(os.environ)
        return serve(options, supervisor, os.environ)
    except DevServerError as error:
        print(f"make run: {error}", file=sys.stderr, flush=True)
        return 1
    except _Stop as stop:
        return 128 + stop.signum
    finally:
        while True:  # a signal landing before stop_all() sets `stopping` must not skip it
            try:
                supervisor.stop_all()
                break
            except _Stop:
                continue


if __name__ == "__main__":
    sys.exit(main())
