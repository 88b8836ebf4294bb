"""Shared test helpers: events, signatures, the function served over real HTTP, RPC counting."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
import requests
import stripe
from google.cloud import firestore
from google.cloud.firestore_v1.services.firestore import client as gapic_client
from google.cloud.firestore_v1.services.firestore.transports import grpc as gapic_grpc
from test_utils.retry import RetryErrors

if TYPE_CHECKING:
    from handlers._projection import Projection

ROOT = Path(__file__).resolve().parent.parent
_quiet = logging.getLogger("tests.retry")
FIXTURES = ROOT / "tests" / "fixtures" / "stripe-events"

SECRET = "whsec_test_primary_0123456789abcdef"
SECOND_SECRET = "whsec_test_rotated_fedcba9876543210"
UNKNOWN_SECRET = "whsec_test_not_configured_00000000"


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def new_event_id() -> str:
    return f"evt_test{uuid.uuid4().hex}"


def make_event(
    event_type: str,
    obj: Mapping[str, Any] | None = None,
    *,
    event_id: str | None = None,
    created: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A Stripe event dict (snapshot payload) with fresh ID and `created` = now by default."""
    event: dict[str, Any] = {
        "id": event_id or new_event_id(),
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()) if created is None else created,
        "data": {"object": dict(obj or {"id": f"obj_{uuid.uuid4().hex[:12]}", "object": "test"})},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    event.update(extra)
    return event


def sign(payload: str, secret: str = SECRET, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header for `payload`, as Stripe computes it."""
    return str(stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp))


def fixture_files() -> list[Path]:
    """Every captured Stripe event payload in tests/fixtures/stripe-events."""
    return sorted(path for path in FIXTURES.rglob("*.json"))


def load_fixture(path: Path, *, fresh: bool = True) -> dict[str, Any]:
    """A fixture event; with `fresh`, a new event ID and `created` = now (IDs repeat there)."""
    event: dict[str, Any] = json.loads(path.read_text())
    if fresh:
        event = copy.deepcopy(event)
        event["id"] = new_event_id()
        event["created"] = int(time.time())
    return event


def builtin_projections() -> list[Projection]:
    """The built-in projections, registered by importing the built-in handler modules."""
    import handlers
    from handlers._projection import PROJECTIONS
    from stripe_ledger.registry import import_handler_modules

    import_handler_modules(handlers.BUILTIN_MODULES)
    return list(PROJECTIONS)


def ledger_record(db: firestore.Client, event_id: str) -> dict[str, Any] | None:
    return db.collection("stripe_events").document(event_id).get().to_dict()


class RpcCounter(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Counts the Firestore RPCs a client sends, by method name, on the wire."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def _count(self, details: Any) -> None:
        self.calls[details.method.rsplit("/", 1)[-1]] += 1

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self._count(details)
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self._count(details)
        return continuation(details, request)

    def total(self) -> int:
        return sum(self.calls.values())

    def reset(self) -> None:
        self.calls.clear()


class InjectedRpcError(grpc.RpcError):  # type: ignore[misc]
    """What gRPC raises for a failed call, as `google.api_core` reads it (code, details)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> None:
        return None

    def initial_metadata(self) -> None:
        return None

    def result(self, timeout: float | None = None) -> None:
        """gRPC's interceptor reads a failed call's outcome from what it raised."""
        raise self


class LostAnswers(RpcCounter):
    """Loses the answer of the first Commit that creates each document under `prefix`: the
    write is applied, then the caller gets DEADLINE_EXCEEDED. `fired` lists those documents."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.fired: list[str] = []

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self._count(details)
        created = [
            write.update.name.split("/documents/", 1)[-1]
            for write in getattr(request, "writes", ())
            if "exists" in write.current_document and not write.current_document.exists
        ]
        target = next((n for n in created if n.startswith(self.prefix)), None)
        if not str(details.method).endswith("/Commit") or target is None or target in self.fired:
            return continuation(details, request)
        sent = continuation(details, request)
        if sent.exception() is not None:  # refused by Firestore: its own answer stands
            return sent
        self.fired.append(target)
        return InjectedRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "injected: answer lost")


def count_rpcs(db: firestore.Client, counter: RpcCounter | None = None) -> RpcCounter:
    """Route `db`'s RPCs through `counter` (a new `RpcCounter` by default), on a channel to the
    emulator like the client's own."""
    counter = counter if counter is not None else RpcCounter()
    host = os.environ["FIRESTORE_EMULATOR_HOST"]
    channel = grpc.insecure_channel(host, options=[("Authorization", "Bearer owner")])
    transport = gapic_grpc.FirestoreGrpcTransport(
        host=host, channel=grpc.intercept_channel(channel, counter)
    )
    db._firestore_api_internal = gapic_client.FirestoreClient(transport=transport)
    return counter


class RpcRecorder(RpcCounter):
    """An `RpcCounter` that also keeps every request (as the protobuf sent, whether the
    library or the adapter built it) and its metadata, to look inside them."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, Any]] = []
        self.metadata: list[tuple[str, frozenset[tuple[str, str]]]] = []

    def _record(self, details: Any, request: Any) -> None:
        method = details.method.rsplit("/", 1)[-1]
        self.requests.append((method, getattr(request, "_pb", request)))
        self.metadata.append((method, frozenset(details.metadata or ())))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self._record(details, request)
        return super().intercept_unary_unary(continuation, details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self._record(details, request)
        return super().intercept_unary_stream(continuation, details, request)

    def written(self) -> list[str]:
        """The paths of the documents every Commit wrote, in order."""
        return [
            write.update.name.split("/documents/", 1)[-1]
            for method, request in self.requests
            if method == "Commit"
            for write in request.writes
        ]


def record_rpcs(db: firestore.Client) -> RpcRecorder:
    """Like `tests.support.count_rpcs`, keeping the requests too."""
    recorder = RpcRecorder()
    count_rpcs(db, recorder)
    return recorder


def record_decoding(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every protobuf map of values the adapter decodes from now on (nested ones too), in
    order: what a read cost in decoding."""
    from stripe_ledger import firestore_client

    decoded: list[Any] = []
    real = firestore_client._decode_map

    def recording(fields: Any, client: firestore.Client) -> Any:
        decoded.append(fields)
        return real(fields, client)

    monkeypatch.setattr(firestore_client, "_decode_map", recording)
    return decoded


class FunctionServer:
    """`functions-framework --target=stripe_webhook` (gunicorn) in a subprocess, on a free port."""

    def __init__(
        self,
        env: Mapping[str, str],
        threads: int = 8,
        source: Path = ROOT / "main.py",
        port: int | None = None,
    ) -> None:
        from stripe_ledger.emulator import free_port

        self.source = source
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.env = {
            **os.environ,
            "THREADS": str(threads),
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.log_path = Path(tempfile.mkstemp(prefix="function-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> FunctionServer:
        command = [
            str(Path(sys.executable).parent / "functions-framework"),
            "--target=stripe_webhook",
            f"--source={self.source}",
            "--host=127.0.0.1",
            f"--port={self.port}",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        @RetryErrors(requests.ConnectionError, max_tries=12, delay=0.25, backoff=1.5, logger=_quiet)
        def wait_ready() -> None:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"function exited early:\n{self.log_text()}")
            requests.get(self.url, timeout=5)

        wait_ready()
        return self

    def kill(self) -> None:
        """SIGKILL the whole server (gunicorn arbiter and worker): a crash, not a shutdown."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    stop = kill

    def rss_bytes(self) -> int:
        """Resident memory of the serving process tree (gunicorn arbiter and workers)."""
        assert self.process is not None
        return sum(_rss(pid) for pid in [self.process.pid, *_children(self.process.pid)])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_entries(self) -> Iterator[dict[str, Any]]:
        """The JSON log lines the function wrote (other lines are gunicorn's)."""
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                yield json.loads(line)

    def post(
        self,
        event: Mapping[str, Any] | str,
        *,
        secret: str = SECRET,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30,
    ) -> requests.Response:
        """POST `event` signed with `secret`, as Stripe would."""
        payload = event if isinstance(event, str) else json.dumps(event)
        all_headers = {
            "Content-Type": "application/json",
            "Stripe-Signature": sign(payload, secret),
        }
        all_headers.update(headers or {})
        return requests.post(self.url, data=payload.encode(), headers=all_headers, timeout=timeout)

    def deliver_until_settled(
        self, event: Mapping[str, Any], *, attempts: int = 60, pause: float = 0.25
    ) -> requests.Response:
        """Redeliver like Stripe (re-signed each time) until the answer is 2xx."""
        response = None
        for _ in range(attempts):
            try:
                response = self.post(event)
            except requests.ConnectionError:
                time.sleep(pause)
                continue
            if response.ok:
                return response
            time.sleep(pause)
        raise AssertionError(
            f"not settled after {attempts} deliveries: {response and response.text}"
        )


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                child = int(stat.parent.name)
                found += [child, *_children(child)]
    return found


def _rss(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def logged(level: int = logging.WARNING) -> Iterator[list[logging.LogRecord]]:
    """The records of `level` and above that the package logs meanwhile (whether or not
    `logs.configure` stopped them propagating to pytest's handlers)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep(level)
    package = logging.getLogger("stripe_ledger")
    package.addHandler(keep)
    try:
        yield records
    finally:
        package.removeHandler(keep)
