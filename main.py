"""The Cloud Functions: `stripe_webhook` receives Stripe's webhook deliveries, and
`run_outbox` (private, called by Cloud Scheduler) runs the outbox tasks that are due.

Serve them with `functions-framework --target=stripe_webhook` (or `--target=run_outbox`).
Everything they do lives in the `stripe_ledger` package; handlers and task executors live in
`handlers/` and in the modules named by STRIPE_HANDLER_MODULES.
"""

import gc

# What Python's gc docs advise for a server that forks its workers after importing the app,
# as functions-framework's gunicorn does: no collection while importing (a cold start pays
# for none, about a tenth of the import time), then the imported objects frozen before the
# fork, so the worker's collections never walk them again.
gc.disable()

import functools

import flask
import functions_framework

from stripe_ledger import http, logs
from stripe_ledger.service import LazyService, build_service

logs.configure()
_service = LazyService()
# The outbox runner never verifies a delivery, so it is deployed without the signing secret.
_outbox_service = LazyService(functools.partial(build_service, require_secret=False))
gc.freeze()
gc.enable()


@functions_framework.http
def stripe_webhook(request: flask.Request) -> flask.Response:
    """Verify, record and process one Stripe webhook delivery."""
    return http.handle(request, _service)


@functions_framework.http
def run_outbox(request: flask.Request) -> flask.Response:
    """Run the outbox tasks that are due (Cloud Scheduler calls it every minute)."""
    return http.handle_outbox(request, _outbox_service)
