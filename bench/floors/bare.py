"""Floor (a): a functions-framework function that answers 200 to anything.

What HTTP through functions-framework and gunicorn costs before any work is done.
"""

import flask
import functions_framework

__all__ = ["bare"]


@functions_framework.http
def bare(request: flask.Request) -> tuple[str, int]:
    """Read the body (as the webhook must) and answer 200."""
    request.get_data()
    return "OK", 200
