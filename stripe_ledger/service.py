"""The webhook service of one instance: settings, Firestore client and handlers, wired once.

`build_service` is the one place that wires real dependencies; tests build a
`WebhookService` with their own client, registry and clock. `LazyService` builds it on the
first request, not at import, because the Firestore client reads `FIRESTORE_EMULATOR_HOST`
when it is constructed and a cold start should not pay for a client before it is needed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping

import google.auth.exceptions
from google.cloud import firestore

from stripe_ledger.config import Settings
from stripe_ledger.errors import ConfigurationError, InvalidEvent, WebhookError
from stripe_ledger.fetch import StripeFetcher, refetches
from stripe_ledger.firestore_client import create_client
from stripe_ledger.ledger import Clock, EventLedger, utc_now
from stripe_ledger.outcomes import Delivery
from stripe_ledger.processing import process_event
from stripe_ledger.registry import HandlerRegistry, import_handler_modules
from stripe_ledger.thin import is_thin, process_thin, thin_event_from
from stripe_ledger.verify import VerifiedEvent, event_from, load_json, verify_signature

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
        data = load_json(signed.text)
        received = (thin_event_from if is_thin(data) else event_from)(data, signed.text)
        try:
            return self._process(received, signed.text, signature, signed.secret)
        except WebhookError as error:
            error.event_id, error.event_type = received.id, received.type
            raise

    def _process(
        self, received: VerifiedEvent, text: str, signature: str | None, secret: str
    ) -> Delivery:
        db, ledger, registry, fetcher = self.db, self.ledger, self.registry, self.fetcher
        if is_thin(received.data):
            if fetcher is not None:  # stripe's own parser checks and types the notification
                try:
                    fetcher.client.parse_event_notification(
                        text, signature, secret, self.settings.tolerance_seconds
                    )
                except (KeyError, TypeError, ValueError) as error:
                    raise InvalidEvent(
                        f"thin event notification could not be read: {type(error).__name__}"
                    ) from None
            return process_thin(received, fetcher=fetcher, db=db, ledger=ledger, registry=registry)
        prepare = fetcher.refetched if fetcher and refetches(self.settings, received) else None
        return process_event(received, db=db, ledger=ledger, registry=registry, prepare=prepare)


def build_service(
    environ: Mapping[str, str] | None = None, *, require_secret: bool = True
) -> WebhookService:
    """Read the settings, import the handler modules and create the client.

    The function and the operations CLI share this wiring, so a replay runs the same handlers
    against the same ledger as a live delivery. The CLI passes `require_secret=False`: it
    never verifies a delivery (its service's `deliver` refuses every signature then).
    """
    import handlers  # the project's handler package: its registry and built-in modules

    environ = os.environ if environ is None else environ
    settings = Settings.from_env(environ, require_secret=require_secret)
    import_handler_modules(handlers.BUILTIN_MODULES + settings.handler_modules)
    try:
        db = create_client(settings, environ)
    except google.auth.exceptions.DefaultCredentialsError as error:
        raise ConfigurationError(f"no Google Cloud credentials or project: {error}") from error
    return WebhookService(settings, db, handlers.registry)


class LazyService:
    """Builds the service on first use, once per instance, and remembers a failure to build."""

    def __init__(self, factory: Callable[[], WebhookService] = build_service) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._service: WebhookService | None = None
        self._failure: str | None = None

    def __call__(self) -> WebhookService:
        """The service; raises `ConfigurationError` on every call if building it failed."""
        if self._service is None:
            with self._lock:
                if self._service is None and self._failure is None:
                    try:
                        self._service = self._factory()
                    except ConfigurationError as error:
                        self._failure = str(error)
        if self._service is None:
            raise ConfigurationError(self._failure or "service unavailable")
        return self._service
