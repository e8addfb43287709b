"""What the API tells its operators: request ids, logs, metrics, overhead, limits.

Every response carries ``X-Request-Id`` (the caller's, or a new one) and, for
requests that reached a model, ``X-LLMLoom-Overhead-Ms``: the time LLMLoom
added to the provider's own (API, Kubernetes, queue, worker). Each request is
logged as one JSON line with its id. Request bodies above the limit are refused
with 413: before they are read when they say their length, else once the bytes
read pass it.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmloom.api.errors import envelope

log = logging.getLogger("llmloom.api.requests")
REQUEST_ID = "X-Request-Id"
PROVIDER_MS = "X-LLMLoom-Provider-Ms"
OVERHEAD_MS = "X-LLMLoom-Overhead-Ms"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ApiMetrics:
    """The API's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "llmloom_api_requests",
            "Requests answered",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "llmloom_api_request_seconds",
            "Time to answer a request",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.overhead = Histogram(
            "llmloom_api_overhead_seconds",
            "Time LLMLoom added to the provider's, per answered request",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "llmloom_api_tokens",
            "Tokens spent by answered requests",
            ["tenant", "flavor", "kind"],
            registry=self.registry,
        )

        self.cost = Counter(
            "llmloom_api_cost",
            "What answered requests cost at their flavor's pricing (its currency)",
            ["tenant", "flavor"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "llmloom_api_rate_limited",
            "Requests refused with 429, by the limit they hit (requests, tokens, budget)",
            ["tenant", "limit"],
            registry=self.registry,
        )

    def count_tokens(
        self, tenant: str, flavor: str, prompt: int, completion: int, cost_micros: int = 0
    ) -> None:
        self.tokens.labels(tenant, flavor, "prompt").inc(prompt)
        self.tokens.labels(tenant, flavor, "completion").inc(completion)
        if cost_micros:
            self.cost.labels(tenant, flavor).inc(cost_micros / 1_000_000)


def _route(scope: Scope) -> str:
    route = scope.get("route")
    return str(getattr(route, "path", "unmatched"))


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class Observe:
    """Request ids, overhead, metrics, the log line and the body limit, as plain ASGI.

    Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``, which runs the app in
    a task group and copies each response through a memory stream: that cost about a
    tenth of the API's CPU per request. The body limit counts what is read, so a
    chunked body with no Content-Length is held to it too.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        limit = self.max_body_bytes
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        request_id = _header(headers, b"x-request-id") or uuid.uuid4().hex
        length = _header(headers, b"content-length")
        too_large = length is not None and length.isdigit() and int(length) > limit
        received = 0
        replied = False
        status = 500

        async def limited() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    return {"type": "http.disconnect"}  # the app stops reading
            return message

        async def observed(message: Message) -> None:
            nonlocal replied, status
            if message["type"] == "http.response.start":
                if replied:
                    return
                replied = True
                status = message["status"]
                out = list(message.get("headers", []))
                out.append((b"x-request-id", request_id.encode("latin-1")))
                elapsed = time.perf_counter() - started
                provider = _header(out, PROVIDER_MS.lower().encode())
                route = _route(scope)
                if provider is not None:
                    overhead = max(0.0, elapsed - float(provider) / 1000)
                    out.append((OVERHEAD_MS.lower().encode(), f"{overhead * 1000:.1f}".encode()))
                    self.metrics.overhead.labels(route).observe(overhead)
                self.metrics.requests.labels(route, scope["method"], str(status)).inc()
                self.metrics.latency.labels(route).observe(elapsed)
                if log.isEnabledFor(logging.INFO):
                    line = {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "ms": round(elapsed * 1000, 1),
                        "task": _header(out, b"x-llmloom-task"),
                    }
                    log.info(json.dumps(line))
                message = {**message, "headers": out}
            await send(message)

        async def refuse() -> None:
            body = json.dumps(
                envelope(
                    f"request body of {length or 'more than ' + str(limit)} bytes is over the "
                    f"limit of {limit}",
                    "invalid_request_error",
                    None,
                    "request_too_large",
                )
            ).encode()
            start = {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
            await observed(start)
            await send({"type": "http.response.body", "body": body})

        if too_large:
            await refuse()
            return

        async def guarded(message: Message) -> None:
            # Once the body went over the limit, whatever the app answers (it saw the
            # client leave) gives way to the 413.
            if not too_large:
                await observed(message)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            if not too_large:
                raise
        if too_large and not replied:
            await refuse()


def install(app: FastAPI, metrics: ApiMetrics, max_body_bytes: int) -> None:
    """Add the request-id, logging, metrics and body-limit middleware to the app."""
    app.add_middleware(Observe, metrics=metrics, max_body_bytes=max_body_bytes)
