"""Floor (c): a bare function that imports what the webhook cannot do without.

Its cold start is the least a Stripe-to-Firestore function can have: the interpreter,
functions-framework, `stripe` and `google.cloud.firestore`.
"""

import flask
import functions_framework
import stripe
from google.cloud import firestore

__all__ = ["imports"]

_LOADED = (stripe.__name__, firestore.__name__)  # the imports are what this floor measures


@functions_framework.http
def imports(request: flask.Request) -> tuple[str, int]:
    """Read the body and answer 200."""
    request.get_data()
    return "OK", 200
