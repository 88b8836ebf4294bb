"""The production function (`main.py`) with Firestore faults injected on the wire: a
functions-framework `--source` for tests/test_one_pipeline.py.

Every gRPC channel the process opens to the emulator (`grpc.insecure_channel`, which the
Firestore client calls for FIRESTORE_EMULATOR_HOST) is wrapped in `FaultInjector` before
`main` is imported, so no code of the core is touched and the client keeps its own channel
options and time bounds.

The test drives the faults through the JSON file named by PIPELINE_FAULTS, read again on
every RPC: a list of rules

    {"id": "r1", "method": "Commit", "document": "stripe_events/evt_1",
     "code": "UNAVAILABLE", "skip": 0, "times": null, "after_write": false}

A Commit RPC that writes `document` matches; the first `skip` matches pass, then `times` of
them (all, when null) fail with `code`. With `after_write`, the RPC is sent and its result
awaited first, so the write is applied and only its answer is lost (a write Firestore refuses,
such as a `create()` of an existing document, passes its own error through and is not
counted). With `late`, the caller gets `code` at once and the RPC is held, then sent when the
process's next read (a BatchGetDocuments) has been answered: a write that Firestore applies
after the caller has read the document back. Each injected fault is appended to
PIPELINE_FAULTS + ".log" as one JSON line, so that a test can prove its fault fired.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import flask
import functions_framework
import grpc

from tests.support import InjectedRpcError

__all__ = ["FaultInjector", "stripe_webhook"]

_FAULTS = Path(os.environ["PIPELINE_FAULTS"])
_LOG = Path(f"{_FAULTS}.log")


def _documents(method: str, request: Any) -> list[str]:
    """The document paths (relative to `/documents/`) that a Commit writes."""
    names: list[str] = []
    if method == "Commit":
        for write in request.writes:
            names += [write.update.name, write.delete, write.transform.document]
    return [name.split("/documents/", 1)[-1] for name in names if name]


class _Answered:
    """A streaming call's responses, all received already, with the call's own metadata."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._responses = iter(list(call))

    def __iter__(self) -> _Answered:
        return self

    def __next__(self) -> Any:
        return next(self._responses)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class FaultInjector(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Fails the RPCs that the rules in PIPELINE_FAULTS select (see the module)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._matches: Counter[str] = Counter()
        self._fired: Counter[str] = Counter()
        self._held: list[Any] = []  # the `late` writes, each a call to make

    def _rule(self, details: Any, request: Any) -> dict[str, Any] | None:
        try:
            rules: list[dict[str, Any]] = json.loads(_FAULTS.read_text() or "[]")
        except FileNotFoundError:
            return None
        method = str(details.method).rsplit("/", 1)[-1]
        documents = _documents(method, request)
        for rule in rules:
            if rule["method"] != method or rule["document"] not in documents:
                continue
            with self._lock:
                seen = self._matches[rule["id"]]
                self._matches[rule["id"]] += 1
                fired = self._fired[rule["id"]]
            times = rule.get("times")
            if seen < int(rule.get("skip") or 0) or (times is not None and fired >= int(times)):
                continue
            return rule
        return None

    def _fail(self, rule: dict[str, Any], method: str) -> InjectedRpcError:
        with self._lock, _LOG.open("a") as log:
            self._fired[rule["id"]] += 1
            log.write(json.dumps({"id": rule["id"], "method": method}) + "\n")
        return InjectedRpcError(getattr(grpc.StatusCode, rule["code"]), f"injected {rule['id']}")

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        rule = self._rule(details, request)
        if rule is None:
            return continuation(details, request)
        if rule.get("after_write"):
            sent = continuation(details, request)
            if sent.exception() is not None:  # refused by Firestore: its own answer stands
                return sent
            # The write is applied; only its answer is lost.
        if rule.get("late"):
            with self._lock:
                self._held.append(lambda: continuation(details, request).exception())
        return self._fail(rule, str(details.method))

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        with self._lock:
            held, self._held = self._held, []
        if not held:
            return continuation(details, request)
        answered = _Answered(continuation(details, request))
        for send in held:  # after the read, whatever Firestore answers them
            send()
        return answered


_injector = FaultInjector()
_insecure_channel = grpc.insecure_channel


def _intercepted_channel(target: str, *args: Any, **kwargs: Any) -> Any:
    return grpc.intercept_channel(_insecure_channel(target, *args, **kwargs), _injector)


grpc.insecure_channel = _intercepted_channel  # before main creates any client

import main  # noqa: E402 - imported after the channel factory is wrapped, on purpose


@functions_framework.http
def stripe_webhook(request: flask.Request) -> flask.Response:
    """`main.stripe_webhook`, its Firestore RPCs going through the fault injector."""
    return flask.make_response(main.stripe_webhook(request))
