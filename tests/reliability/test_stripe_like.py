"""The Stripe-like driver itself: what it sends must not make failures of its own."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from tests.reliability.stripe_like import Deliveries, deliver_until_accepted
from tests.support import make_event


class _Refusing(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first request and 200 to the next, keeping connections alive."""

    protocol_version = "HTTP/1.1"
    answered = 0
    clients: set[int] = set()  # noqa: RUF012 - one server per test

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).clients.add(self.client_address[1])
        status = 503 if type(self).answered == 0 else 200
        type(self).answered += 1
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def refusing_once() -> Iterator[str]:
    _Refusing.answered, _Refusing.clients = 0, set()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_each_attempt_has_a_connection_of_its_own(refusing_once: str) -> None:
    """A redelivery never reuses the connection of the attempt before: after a pause longer
    than gunicorn's 2 s keep-alive, the server may close a kept connection just as the
    request goes out, a reset no function can prevent (the load test once saw one)."""
    deliveries = Deliveries()
    answer = deliver_until_accepted(
        refusing_once,
        make_event("test.counter"),
        deliveries,
        deadline=time.monotonic() + 30,
        pause=lambda attempt: 0.01,
    )
    assert answer.status == 200
    assert deliveries.statuses() == [503, 200]
    assert len(_Refusing.clients) == 2
