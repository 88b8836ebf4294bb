"""The production function with its Firestore RPCs counted: a functions-framework `--source`.

It wires exactly what `main.py` wires (`http.handle` on a `LazyService` of `build_service`),
then routes the service's client through `bench._rpcs.RpcCounter`, and answers each request
with the RPCs that request sent in the `X-Bench-Rpcs` header (JSON, by method). This hook
lives in bench/ so that the production code carries no benchmark code.
"""

import json

import flask
import functions_framework

from bench._rpcs import RPCS_HEADER, RpcCounter, intercept
from stripe_ledger import http, logs
from stripe_ledger.service import LazyService, WebhookService, build_service

__all__ = ["stripe_webhook"]

logs.configure()
_counter = RpcCounter()


def _build() -> WebhookService:
    service = build_service()
    intercept(service.db, _counter, service.settings.firestore_timeout_seconds)
    return service


_service = LazyService(_build)


@functions_framework.http
def stripe_webhook(request: flask.Request) -> flask.Response:
    """`main.stripe_webhook`, answering with the request's Firestore RPCs."""
    _counter.start()
    try:
        response = http.handle(request, _service)
    finally:
        calls = _counter.stop()
    response.headers[RPCS_HEADER] = json.dumps(dict(sorted(calls.items())))
    return response
