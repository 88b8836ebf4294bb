"""Serve a function as Cloud Functions does (functions-framework on gunicorn), and talk to it.

`FunctionProcess` starts `functions-framework --source=... --target=...` in its own process
group, times it from spawn to its first 200, reports the memory of its gunicorn arbiter and
worker, and stops the whole group. `post` sends one request on a fresh connection with
`http.client`, which costs the benchmark's own process far less CPU than `requests`.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench._events import SECRET
from stripe_ledger.emulator import free_port

__all__ = [
    "ROOT",
    "FunctionProcess",
    "Response",
    "cpu_seconds",
    "emulator_pids",
    "function_env",
    "post",
    "waits",
]

ROOT = Path(__file__).resolve().parent.parent
_FUNCTIONS_FRAMEWORK = Path(sys.executable).parent / "functions-framework"


@dataclass(frozen=True)
class Response:
    """One answer: its status, headers, body, and the client-side latency in seconds."""

    status: int
    seconds: float
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def function_env(host: str, project: str) -> dict[str, str]:
    """What a served copy runs with: the emulator at `host`, `project`, and the signing
    secret the benchmark signs with."""
    return {
        "FIRESTORE_EMULATOR_HOST": host,
        "GOOGLE_CLOUD_PROJECT": project,
        "STRIPE_WEBHOOK_SECRET": SECRET,
    }


def post(
    port: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float = 30.0,
    connection: http.client.HTTPConnection | None = None,
) -> Response:
    """POST `body` to `/` on a new connection (or on `connection`, already open), and close it."""
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.perf_counter()
    try:
        conn.request("POST", "/", body=body, headers=dict(headers))
        answer = conn.getresponse()
        data = answer.read()
        seconds = time.perf_counter() - started
        headers = {name.lower(): value for name, value in answer.getheaders()}
        return Response(answer.status, seconds, data, headers)
    finally:
        conn.close()


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time the processes `pids` have used so far (all their threads)."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def waits(pids: list[int]) -> int:
    """Voluntary context switches so far of the threads the processes `pids` have now: each
    is a thread that blocked (on a lock, the GIL, a socket) and was switched out. Threads
    that ended are no longer counted (the served function's pool threads live as long as
    its worker)."""
    total = 0
    for pid in pids:
        for status in Path(f"/proc/{pid}/task").glob("*/status"):
            with contextlib.suppress(OSError):
                for line in status.read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
    return total


def emulator_pids(host: str) -> list[int]:
    """The Java process of the Firestore emulator listening on `host`, if it runs here."""
    port_flag = f"--port={host.rsplit(':', 1)[-1]}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if port_flag in argv and any(b"cloud-firestore-emulator" in arg for arg in argv):
                found.append(int(entry.name))
    return found


class FunctionProcess:
    """One functions-framework server (gunicorn arbiter and its worker) on a free port."""

    def __init__(
        self, source: Path, target: str, env: Mapping[str, str], *, threads: int = 16
    ) -> None:
        self.source = source
        self.target = target
        self.port = free_port()
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "THREADS": str(threads),
            **env,
        }
        self.log_path = Path(tempfile.mkstemp(prefix=f"bench-{target}-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None
        self.spawned_at = 0.0
        self.listening_after = 0.0
        self.early_answers: list[str] = []

    def spawn(self) -> None:
        """Start the server; `spawned_at` is the `perf_counter` just before the fork."""
        command = [
            str(_FUNCTIONS_FRAMEWORK),
            f"--target={self.target}",
            f"--source={self.source}",
            "--host=127.0.0.1",
            f"--port={self.port}",
        ]
        with self.log_path.open("ab") as log:
            self.spawned_at = time.perf_counter()
            self.process = subprocess.Popen(  # noqa: S603 - a fixed command line
                command,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def first_ok(
        self, request: Callable[[], tuple[bytes, dict[str, str]]], timeout: float = 60.0
    ) -> float:
        """Send `request()` until it is answered 200; seconds from spawn to that answer.

        `request` is called again for every request sent, so it can give a new event each
        time: a retried event could be held by the attempt that failed. Answers other than
        200 are kept in `early_answers`.

        Until gunicorn listens, connections are refused and retried every 5 ms; once it
        listens, the request waits in the socket's backlog for the worker, as a cold
        start's first request does. `listening_after` records when the first connection
        was accepted, which splits the cold start into loading and the first request.
        """
        deadline = time.perf_counter() + timeout
        last = "no answer"
        while time.perf_counter() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.target} exited early:\n{self.log_tail()}")
            body, headers = request()
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            try:
                connection.connect()
            except ConnectionRefusedError:
                time.sleep(0.005)
                continue
            if not self.listening_after:
                self.listening_after = time.perf_counter() - self.spawned_at
            try:
                answer = post(self.port, body, headers, connection=connection)
            except (ConnectionResetError, http.client.HTTPException):
                time.sleep(0.005)
                continue
            if answer.status == 200:
                return time.perf_counter() - self.spawned_at
            last = f"{answer.status} {answer.body[:300]!r}"
            self.early_answers.append(last)
            time.sleep(0.05)
        raise RuntimeError(f"{self.target} gave no 200 within {timeout} s: {last}")

    def start(self, request: Callable[[], tuple[bytes, dict[str, str]]]) -> float:
        """Spawn and wait for the first 200 to `request()`; the cold start in seconds."""
        self.spawn()
        try:
            return self.first_ok(request)
        except BaseException:
            self.stop()
            raise

    def pids(self) -> list[int]:
        """The gunicorn arbiter and its workers."""
        if self.process is None:
            return []
        arbiter = self.process.pid
        try:
            children = Path(f"/proc/{arbiter}/task/{arbiter}/children").read_text().split()
        except OSError:
            return []
        return [arbiter, *(int(pid) for pid in children)]

    def cpu_seconds(self) -> float:
        """CPU time the arbiter and its workers have used so far."""
        return cpu_seconds(self.pids())

    def waits(self) -> int:
        """Voluntary context switches the arbiter's and its workers' threads have made so far
        (`waits`)."""
        return waits(self.pids())

    def memory(self, *, pss: bool = True) -> dict[str, int]:
        """Bytes now: `rss` (summed), `pss` (shared pages split; 0 unless `pss`, whose
        reading costs the kernel a walk of the page tables, about 2 ms per process), `hwm`
        (summed peak RSS)."""
        totals = {"rss": 0, "pss": 0, "hwm": 0}
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        totals["rss"] += int(line.split()[1]) * 1024
                    elif line.startswith("VmHWM:"):
                        totals["hwm"] += int(line.split()[1]) * 1024
                if pss:
                    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                        if line.startswith("Pss:"):
                            totals["pss"] += int(line.split()[1]) * 1024
        return totals

    def stop(self) -> None:
        """Stop the whole process group: SIGINT (gunicorn's quick shutdown), then SIGKILL."""
        process, self.process = self.process, None
        if process is None:
            return
        for sig in (signal.SIGINT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(5)
                break
            except subprocess.TimeoutExpired:
                continue

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the server wrote."""
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def remove_log(self) -> None:
        with contextlib.suppress(OSError):
            self.log_path.unlink()
