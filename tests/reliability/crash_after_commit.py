"""The function, served so that its instance dies after the commit and before the answer.

For the event IDs listed (one per line) in the file named by CRASH_AFTER_COMMIT_FILE, the
whole serving process group is killed once the function has returned, so Stripe never sees
the answer of a delivery whose transaction committed.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import flask
import functions_framework

import main


@functions_framework.http
def stripe_webhook(request: flask.Request) -> flask.Response:
    response = flask.make_response(main.stripe_webhook(request))
    event_id = json.loads(response.get_data()).get("event_id")
    doomed = Path(os.environ["CRASH_AFTER_COMMIT_FILE"]).read_text().split()
    if event_id in doomed:
        os.killpg(os.getpgid(0), signal.SIGKILL)
    return response
