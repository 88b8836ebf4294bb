"""The webhook service of one instance: settings, Firestore client and handlers, wired once.

`build_service` is the one place that wires real dependencies; tests build a
`WebhookService` with their own client, registry and clock. `LazyService` builds it on the
first request, not at import, because the Firestore client reads `FIRESTORE_EMULATOR_HOST`
when it is constructed and a cold start should not pay for a client before it is needed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection, Mapping

import google.auth.exceptions
from google.cloud import firestore

from stripe_ledger.config import BUILTIN_HANDLER_MODULES, Settings
from stripe_ledger.errors import ConfigurationError, LedgerUnavailable, WebhookError
from stripe_ledger.fetch import StripeFetcher
from stripe_ledger.firestore_client import create_client
from stripe_ledger.ledger import RETRYABLE, Clock, EventLedger, utc_now
from stripe_ledger.outcomes import Delivery
from stripe_ledger.pipeline import process_event
from stripe_ledger.registry import HandlerRegistry, import_handler_modules, registry
from stripe_ledger.verify import (
    VerifiedEvent,
    check_notification,
    is_thin,
    parse_event,
    verify_signature,
)

__all__ = ["LazyService", "WebhookService", "build_service"]


class WebhookService:
    """Verifies deliveries and processes their events against one ledger."""

    def __init__(
        self,
        settings: Settings,
        db: firestore.Client,
        registry: HandlerRegistry,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.db = db
        self.registry = registry
        self.ledger = EventLedger(db, settings, clock)
        self.fetcher = StripeFetcher.from_settings(settings)

    def deliver(self, body: bytes, signature: str | None) -> Delivery:
        """Verify one delivery and process its event (a snapshot event, or a thin event
        notification); raise a `WebhookError` if it can't be."""
        settings = self.settings
        signed = verify_signature(
            body, signature, settings.webhook_secrets, settings.tolerance_seconds
        )
        received = parse_event(signed.text)
        if is_thin(received.data) and self.fetcher is not None:
            check_notification(self.fetcher.client, signed, signature, settings.tolerance_seconds)
        try:
            return self.process(received)
        except WebhookError as error:
            error.event_id, error.event_type = received.id, received.type
            raise

    def process(
        self,
        received: VerifiedEvent,
        *,
        reclaim: Collection[str] = RETRYABLE,
        note: str | None = None,
    ) -> Delivery:
        """Process a verified or trusted event through the pipeline, with this instance's
        client, ledger, handlers and Stripe fetcher (see `pipeline.process_event`)."""
        return process_event(
            received,
            db=self.db,
            ledger=self.ledger,
            registry=self.registry,
            fetcher=self.fetcher,
            reclaim=reclaim,
            note=note,
        )


def build_service(
    environ: Mapping[str, str] | None = None, *, require_secret: bool = True
) -> WebhookService:
    """Read the settings, import the handler modules and create the client.

    The function and the operations CLI share this wiring, so a replay runs the same handlers
    against the same ledger as a live delivery. The CLI passes `require_secret=False`: it
    never verifies a delivery (its service's `deliver` refuses every signature then).
    Raises `ConfigurationError` for settings or handler modules that can never work, and
    `LedgerUnavailable` when no credentials can be had right now (a later call may succeed).
    """
    environ = os.environ if environ is None else environ
    settings = Settings.from_env(environ, require_secret=require_secret)
    import_handler_modules(BUILTIN_HANDLER_MODULES + settings.handler_modules)
    try:
        db = create_client(settings, environ)
    except google.auth.exceptions.DefaultCredentialsError as error:
        raise LedgerUnavailable(f"no Google Cloud credentials or project: {error}") from error
    return WebhookService(settings, db, registry)


class LazyService:
    """Builds the service on first use, once per instance.

    A `ConfigurationError` (settings, handler modules) is remembered: every later call raises
    it again without trying, since nothing changes until the instance is redeployed. Any
    other failure (credentials not available yet, a network fault) is not: the next call
    tries again, so an instance recovers once the cause is gone.
    """

    def __init__(self, factory: Callable[[], WebhookService] = build_service) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._service: WebhookService | None = None
        self._failure: ConfigurationError | None = None

    def __call__(self) -> WebhookService:
        """The service; raises what building it raised (see the class)."""
        if self._service is None:
            with self._lock:
                if self._failure is not None:
                    raise ConfigurationError(str(self._failure))
                if self._service is None:
                    try:
                        self._service = self._factory()
                    except ConfigurationError as error:
                        self._failure = error
                        raise
        return self._service
