"""A local fake of Stripe's HTTP API for tests: a threaded `http.server` speaking Stripe's JSON.

Point the real `stripe` client at it with `STRIPE_API_BASE=fake.url` (or
`base_addresses={"api": fake.url}`) and `STRIPE_API_KEY=fake.api_key`.

Built in: `GET /v1/events`, newest first, paged like Stripe (`limit`, `starting_after`,
`has_more`), filtered by `created[gte|gt|lte|lt]`, `type` and `delivery_success`
(`add_event(event, delivered=False)` marks whether its delivery succeeded).

`serve_lists()` lists `objects` by collection (`GET /v1/customers`, `/v1/checkout/sessions`,
...), newest first, paged the same way; subscriptions only with `status=all` include
canceled ones, as Stripe's do.

More routes: `route(method, pattern)` registers a handler for a path regex; it receives the
`Request` and the match and returns a `Response`. For example, object retrieval:

    @fake.route("GET", r"/v1/(?P<objects>[a-z_]+)/(?P<id>[A-Za-z0-9_]+)")
    def retrieve(request, match):
        found = fake.objects.get((match["objects"], match["id"]))
        return Response(200, found) if found else not_found(match["id"])

Scripted failures: `fail(status, times=n)` answers the next n requests (on `path` if given)
with a Stripe-shaped error, before any route runs: 429 and 5xx for retry tests. Every request
is recorded in `requests`, with its arrival time.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["FakeStripe", "Request", "Response", "not_found", "stripe_error"]


@dataclass(frozen=True)
class Request:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float
    """`time.monotonic()` on arrival."""


@dataclass(frozen=True)
class Response:
    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)


Route = Callable[[Request, "re.Match[str]"], Response]

_CLIENT_ERRORS = (400, 401, 402, 403, 404, 429)


def stripe_error(status: int, message: str, **extra: Any) -> Response:
    """An error answer shaped like Stripe's (`{"error": {"type", "message", ...}}`)."""
    kind = "invalid_request_error" if status in _CLIENT_ERRORS else "api_error"
    error = {"type": kind, "message": message, **extra}
    if status == 429:
        error["code"] = "rate_limit"
    return Response(status, {"error": error}, {"Request-Id": "req_fake"})


def not_found(object_id: str) -> Response:
    return stripe_error(404, f"No such object: '{object_id}'", code="resource_missing")


@dataclass
class _Failure:
    status: int
    remaining: int
    path: str | None
    headers: Mapping[str, str]


class FakeStripe:
    """The fake server; a context manager that starts and stops it."""

    def __init__(self, *, api_key: str = "sk_test_fake_0123456789", page_size_cap: int = 100):
        self.api_key = api_key
        self.page_size_cap = page_size_cap
        """Pages hold at most this many events whatever `limit` asks (forces paging)."""
        self.events: list[dict[str, Any]] = []
        self.delivered: set[str] = set()
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        """(collection, id) -> object, served by `serve_objects()`, e.g. ("customers", "cus_1")."""
        self.v2_events: dict[str, dict[str, Any]] = {}
        """Event ID -> v2 event (thin events in full), served by `serve_objects()`."""
        self.requests: list[Request] = []
        self.on_request: Callable[[Request], None] | None = None
        """Called with each request before it is answered (a test's hook into a run)."""
        self._routes: list[tuple[str, re.Pattern[str], Route]] = []
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.route("GET", r"/v1/events")(self._list_events)

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add_event(self, event: dict[str, Any], *, delivered: bool = False) -> None:
        with self._lock:
            self.events.append(event)
            if delivered:
                self.delivered.add(str(event["id"]))

    def route(self, method: str, pattern: str) -> Callable[[Route], Route]:
        """Register a handler for `method` on paths fully matching `pattern`."""

        def register(handler: Route) -> Route:
            self._routes.append((method.upper(), re.compile(pattern), handler))
            return handler

        return register

    def serve_objects(self) -> FakeStripe:
        """Serve `GET /v1/<collection>/<id>` from `objects` (collections may nest, as in
        `checkout/sessions`) and `GET /v2/core/events/<id>` from `v2_events`; 404 otherwise."""

        @self.route("GET", r"/v2/core/events/(?P<id>[A-Za-z0-9_]+)")
        def v2_event(request: Request, match: re.Match[str]) -> Response:
            with self._lock:
                found = self.v2_events.get(match["id"])
            return Response(200, found) if found else not_found(match["id"])

        @self.route("GET", r"/v1/(?P<objects>[a-z_/]+)/(?P<id>[A-Za-z0-9_]+)")
        def retrieve(request: Request, match: re.Match[str]) -> Response:
            with self._lock:
                found = self.objects.get((match["objects"], match["id"]))
            return Response(200, found) if found else not_found(match["id"])

        return self

    def serve_lists(self) -> FakeStripe:
        """Serve the list endpoints of `objects` (see the module); call before
        `serve_objects`, whose routes would otherwise take `/v1/checkout/sessions`."""

        @self.route("GET", rf"/v1/(?P<objects>{'|'.join(_LISTS)})")
        def listed(request: Request, match: re.Match[str]) -> Response:
            collection = match["objects"]
            with self._lock:
                found = [obj for (kind, _), obj in self.objects.items() if kind == collection]
            if collection == "subscriptions" and request.query.get("status") != "all":
                found = [obj for obj in found if obj.get("status") != "canceled"]
            found.sort(key=lambda obj: (int(obj.get("created") or 0), str(obj["id"])), reverse=True)
            return self._page(request, found, f"/v1/{collection}")

        return self

    def put_object(self, obj: Mapping[str, Any]) -> None:
        """Make `obj` (with `id` and `object`) what Stripe's API returns for it now."""
        collection = str(obj["object"]).replace(".", "/") + "s"
        with self._lock:
            self.objects[(collection, str(obj["id"]))] = dict(obj)

    def fail(
        self,
        status: int,
        *,
        times: int = 1,
        path: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next `times` requests (to `path`, if given) with a `status` error."""
        with self._lock:
            self._failures.append(_Failure(status, times, path, dict(headers or {})))

    def reset(self) -> FakeStripe:
        """Forget every event, object, request, scripted failure and hook (the routes stay),
        so that one running fake can serve several tests as if each had a fresh one."""
        with self._lock:
            self.events.clear()
            self.delivered.clear()
            self.objects.clear()
            self.v2_events.clear()
            self.requests.clear()
            self._failures.clear()
            self.on_request = None
        return self

    def requests_to(self, path: str) -> list[Request]:
        return [request for request in self.requests if request.path == path]

    # --- serving ---------------------------------------------------------------------

    def start(self) -> FakeStripe:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                fake._serve(self)

            do_POST = do_DELETE = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeStripe:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self, http: BaseHTTPRequestHandler) -> None:
        parsed = urllib.parse.urlsplit(http.path)
        length = int(http.headers.get("Content-Length") or 0)
        request = Request(
            method=http.command,
            path=parsed.path,
            query=dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)),
            headers={key.lower(): value for key, value in http.headers.items()},
            body=http.rfile.read(length) if length else b"",
            at=time.monotonic(),
        )
        with self._lock:
            self.requests.append(request)
        hook = self.on_request
        if hook is not None:
            hook(request)
        response = self._answer(request)
        body = json.dumps(response.body).encode()
        http.send_response(response.status)
        http.send_header("Content-Type", "application/json")
        http.send_header("Content-Length", str(len(body)))
        for name, value in response.headers.items():
            http.send_header(name, value)
        http.end_headers()
        http.wfile.write(body)

    def _answer(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return stripe_error(401, "Invalid API Key provided")
        with self._lock:
            for failure in self._failures:
                if failure.remaining > 0 and failure.path in (None, request.path):
                    failure.remaining -= 1
                    scripted = stripe_error(failure.status, f"scripted {failure.status}")
                    return Response(failure.status, scripted.body, failure.headers)
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(request.path)
            if match and method == request.method:
                return handler(request, match)
        return stripe_error(404, f"Unrecognized request URL ({request.method}: {request.path})")

    # --- GET /v1/events --------------------------------------------------------------

    def _list_events(self, request: Request, match: re.Match[str]) -> Response:
        query = request.query
        with self._lock:
            ordered = sorted(
                enumerate(self.events), key=lambda item: (item[1]["created"], item[0]), reverse=True
            )
            delivered = set(self.delivered)
        events = [event for _, event in ordered if _selected(event, query, delivered)]
        return self._page(request, events, "/v1/events")

    def _page(self, request: Request, items: list[dict[str, Any]], url: str) -> Response:
        """The page of `items` (already filtered and ordered) that `limit`, `starting_after`
        and `created[...]` select."""
        query = request.query
        try:
            limit = int(query.get("limit", "10"))
        except ValueError:
            return stripe_error(400, "Invalid integer: limit", param="limit")
        if not 1 <= limit <= 100:
            return stripe_error(400, "limit must be between 1 and 100", param="limit")
        items = [item for item in items if _created_within(item, query)]
        if "starting_after" in query:
            ids = [item["id"] for item in items]
            if query["starting_after"] not in ids:
                return stripe_error(400, f"No such object: '{query['starting_after']}'")
            items = items[ids.index(query["starting_after"]) + 1 :]
        size = min(limit, self.page_size_cap)
        body = {"object": "list", "url": url, "has_more": len(items) > size, "data": items[:size]}
        return Response(200, body)


_LISTS = (
    "products",
    "prices",
    "customers",
    "subscriptions",
    "invoices",
    "invoice_payments",
    "payment_intents",
    "charges",
    "refunds",
    "disputes",
    "checkout/sessions",
)


def _created_within(item: Mapping[str, Any], query: Mapping[str, str]) -> bool:
    created = int(item.get("created") or 0)
    bounds = {
        "created[gte]": lambda bound: created >= bound,
        "created[gt]": lambda bound: created > bound,
        "created[lte]": lambda bound: created <= bound,
        "created[lt]": lambda bound: created < bound,
    }
    return all(holds(int(query[name])) for name, holds in bounds.items() if name in query)


def _selected(event: Mapping[str, Any], query: Mapping[str, str], delivered: set[str]) -> bool:
    if "type" in query and event["type"] != query["type"]:
        return False
    if "delivery_success" in query:
        wanted = query["delivery_success"] == "true"
        if (event["id"] in delivered) != wanted:
            return False
    return True
