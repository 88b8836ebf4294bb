"""The Cloud Function: `stripe_webhook` receives Stripe's webhook deliveries.

Serve it with `functions-framework --target=stripe_webhook`. Everything it does lives in the
`stripe_ledger` package; handlers live in `handlers/` and in the modules named by
STRIPE_HANDLER_MODULES.
"""

import flask
import functions_framework

from stripe_ledger import http, logs
from stripe_ledger.service import LazyService

logs.configure()
_service = LazyService()


@functions_framework.http
def stripe_webhook(request: flask.Request) -> flask.Response:
    """Verify, record and process one Stripe webhook delivery."""
    return http.handle(request, _service)
