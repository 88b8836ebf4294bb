"""Count a Firestore client's RPCs on the wire, per thread, with a gRPC interceptor.

The interceptor wraps the channel the client already has, so the RPCs keep the client's
own channel options and go to the same endpoint; only a counter is added in front. Counts
are kept per thread because a gunicorn worker serves each request on its own thread: the
RPCs a thread sends between `start()` and `stop()` are the RPCs of one request.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import grpc
from google.cloud import firestore
from google.cloud.firestore_v1.services.firestore import client as gapic_client
from google.cloud.firestore_v1.services.firestore.transports import grpc as gapic_grpc

from stripe_ledger.firestore_client import bound_rpc_time

__all__ = ["RPCS_HEADER", "RpcCounter", "intercept"]

RPCS_HEADER = "X-Bench-Rpcs"
"""The response header in which `bench._counted_main` reports a request's RPCs (JSON)."""


class RpcCounter(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Counts RPCs by method name for the threads that called `start()`."""

    def __init__(self) -> None:
        self._local = threading.local()

    def start(self) -> None:
        """Count this thread's RPCs from now on, from zero."""
        self._local.calls = Counter()

    def stop(self) -> Counter[str]:
        """Stop counting this thread's RPCs; return what it sent since `start()`."""
        calls: Counter[str] = getattr(self._local, "calls", None) or Counter()
        self._local.calls = None
        return calls

    def _count(self, details: Any) -> None:
        calls = getattr(self._local, "calls", None)
        if calls is not None:
            calls[str(details.method).rsplit("/", 1)[-1]] += 1

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self._count(details)
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self._count(details)
        return continuation(details, request)


def intercept(db: firestore.Client, counter: RpcCounter, timeout_seconds: float | None) -> None:
    """Send `db`'s RPCs through `counter`, on `db`'s own channel.

    The generated client is rebuilt on the intercepted channel, so the per-RPC time bound
    the service applies (`bound_rpc_time`) is applied again when `timeout_seconds` is given.
    """
    transport = db._firestore_api._transport  # creates the client's channel if needed
    channel = grpc.intercept_channel(transport.grpc_channel, counter)
    counted = gapic_grpc.FirestoreGrpcTransport(host=db._target, channel=channel)
    db._transport = counted
    db._firestore_api_internal = gapic_client.FirestoreClient(
        transport=counted, client_options=db._client_options
    )
    if timeout_seconds is not None:
        bound_rpc_time(db, timeout_seconds)
