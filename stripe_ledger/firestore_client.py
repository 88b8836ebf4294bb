"""The Firestore client of one instance, with every RPC bounded in time.

The client library retries an unreachable Firestore for 60 s per call by default (300 s for
reads), so a network cut would hold each delivery for minutes before Stripe got its 503.
Here every RPC, its retries included, is bounded by `firestore_timeout_seconds`. And after a
cut, gRPC waits up to two minutes between reconnection attempts by default, answering 503
long after Firestore is back; the channel here retries every two seconds at most.
"""

from __future__ import annotations

from collections.abc import Mapping

from google.cloud import firestore
from google.cloud.firestore_v1 import base_client

from stripe_ledger.config import Settings

__all__ = ["EMULATOR_PROJECT", "bound_rpc_time", "create_client"]

EMULATOR_PROJECT = "demo-stripe-ledger"
"""The project used against the emulator when GOOGLE_CLOUD_PROJECT is unset."""

_RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def create_client(settings: Settings, environ: Mapping[str, str]) -> firestore.Client:
    """The client for `settings` (the emulator's when FIRESTORE_EMULATOR_HOST is set)."""
    project = settings.project
    if project is None and environ.get("FIRESTORE_EMULATOR_HOST"):
        project = EMULATOR_PROJECT
    _shorten_reconnect_backoff()
    client = firestore.Client(project=project, database=settings.database)
    bound_rpc_time(client, settings.firestore_timeout_seconds)
    return client


def _shorten_reconnect_backoff() -> None:
    # The client builds its gRPC channel from these module-level option lists (the first for
    # Firestore, the second also for the emulator's channel); there is no public argument.
    for options in (base_client._DEFAULT_CHANNEL_OPTIONS, base_client._GRPC_MSG_SIZE_OPTIONS):
        for option in _RECONNECT_OPTIONS:
            if option not in options:
                options.append(option)


def bound_rpc_time(client: firestore.Client, seconds: float) -> None:
    """Limit each of `client`'s RPCs, retries included, to `seconds`.

    The generated client keeps one wrapped callable per RPC with its default retry and
    timeout; they are not configurable through a public argument, so they are set here.
    `tests/test_firestore_client.py` proves the bound against an unreachable endpoint.
    """
    for wrapped in client._firestore_api._transport._wrapped_methods.values():
        retry = getattr(wrapped, "_retry", None)
        if retry is not None:
            wrapped._retry = retry.with_timeout(seconds)
        wrapped._timeout = seconds
