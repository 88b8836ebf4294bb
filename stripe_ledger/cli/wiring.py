"""The one place `stripe-ledger` builds its real dependencies: the function's own service
(settings, Firestore client, ledger, handlers) without its signing secret, the outbox over it,
and the Stripe API client; and the one line, with its exit status, for an error no command
turned into its own.

Firestore is probed before the client is built: the client's retries would take a minute
to report an emulator that is not there.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from stripe_ledger import logs
from stripe_ledger.cli.render import EXIT_FAILED, EXIT_USAGE
from stripe_ledger.errors import ConfigurationError, LedgerUnavailable

if TYPE_CHECKING:
    from stripe import StripeClient

    from stripe_ledger.fetch import StripeFetcher
    from stripe_ledger.outbox import Outbox
    from stripe_ledger.service import WebhookService
    from stripe_ledger.stripe_api import ApiRetry

__all__ = [
    "describe_unexpected",
    "log_retry",
    "outbox",
    "service",
    "stripe_client",
    "stripe_fetcher",
]

_FETCH_BUDGET_SECONDS = 120.0

_EMULATOR_PROBE_SECONDS = 1.0


def service() -> WebhookService:
    """The function's wiring without its signing secret, after a quick emulator check."""
    from stripe_ledger.service import build_service

    host = os.environ.get("FIRESTORE_EMULATOR_HOST")
    if host is not None:
        if not host.strip():
            raise ConfigurationError(
                "FIRESTORE_EMULATOR_HOST is set but empty: set it to the emulator's host:port, "
                "or unset it to use Firestore in GOOGLE_CLOUD_PROJECT"
            )
        _probe_emulator(host)
    # The function imports STRIPE_HANDLER_MODULES from its source directory; the tool, run
    # from the project's directory, finds them there too.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return build_service(os.environ, require_secret=False)
    except OSError as error:  # google.cloud.client: no project could be determined
        raise ConfigurationError(
            f"no Google Cloud project: set GOOGLE_CLOUD_PROJECT ({error})"
        ) from error
    except LedgerUnavailable as error:  # no credentials: for an operator, a setup to fix
        raise ConfigurationError(str(error)) from error


def outbox(service: WebhookService) -> Outbox:
    """The outbox over `service`'s client, settings, handlers and clock."""
    from stripe_ledger.outbox import Outbox

    return Outbox(service.db, service.settings, service.registry, service.ledger.clock)


def log_retry(command: str) -> Callable[[ApiRetry], None]:
    """A `StripeApi.on_retry` that logs each retry as one WARNING line of `command`."""

    def retried(retry: ApiRetry) -> None:
        logs.log(
            logging.WARNING,
            f"Stripe API: {retry.request}: {retry.error}; retry {retry.retry} of "
            f"{retry.max_retries} in {retry.delay_seconds:.2f} s",
            command=command,
            http_status=retry.http_status,
            retry=retry.retry,
            delay_s=retry.delay_seconds,
        )

    return retried


def stripe_client() -> StripeClient:
    """Stripe's client from STRIPE_API_KEY (and STRIPE_API_BASE)."""
    from stripe_ledger.stripe_api import client_from_env

    return client_from_env(os.environ)


def stripe_fetcher(command: str, max_retries: int) -> StripeFetcher:
    """The function's kind of fetcher for a long operation: each page's calls, retries
    included, within two minutes, every retry logged."""
    from stripe_ledger.fetch import StripeFetcher
    from stripe_ledger.stripe_api import StripeApi

    client = stripe_client()
    api = StripeApi(client, max_retries=max_retries, on_retry=log_retry(command))
    return StripeFetcher(client, _FETCH_BUDGET_SECONDS, api=api)


def _probe_emulator(host: str) -> None:
    """Fail in a second, not after the client's retries, when no emulator listens on `host`."""
    name, _, port = host.rpartition(":")
    try:
        with socket.create_connection(
            (name.strip("[]") or "localhost", int(port)), timeout=_EMULATOR_PROBE_SECONDS
        ):
            return
    except (OSError, ValueError):
        pass
    raise ConfigurationError(
        f"no Firestore emulator answers at FIRESTORE_EMULATOR_HOST={host}: start one "
        "(`make run`, or `python -m stripe_ledger.emulator -- COMMAND`), or unset the "
        "variable to use Firestore in GOOGLE_CLOUD_PROJECT"
    )


def describe_unexpected(error: Exception) -> tuple[str, int]:
    """One line, and the exit status, for an error no operation turned into its own."""
    import google.auth.exceptions
    from google.api_core import exceptions as gexc

    from stripe_ledger.firestore_client import is_unavailable

    if isinstance(
        error,
        gexc.PermissionDenied | gexc.Unauthenticated | google.auth.exceptions.GoogleAuthError,
    ):
        return f"Firestore refused the credentials: {_first_line(error)}", EXIT_USAGE
    if isinstance(error, gexc.FailedPrecondition):  # e.g. a composite index is missing
        return f"Firestore: {_first_line(error)}", EXIT_USAGE
    if is_unavailable(error):
        return f"Firestore unavailable: {_first_line(error)}", EXIT_FAILED
    return f"unexpected error: {type(error).__name__}: {_first_line(error)}", EXIT_FAILED


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
