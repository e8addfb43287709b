"""What the API tells its operators: request ids, logs, metrics, overhead, limits.

Every response carries ``X-Request-Id`` (the caller's, or a new one) and, for
requests that reached a model, ``X-LLMLoom-Overhead-Ms``: the time LLMLoom
added to the provider's own (API, Kubernetes, queue, worker). Each request is
logged as one JSON line with its id. Request bodies above the limit are refused
with 413 before they are read.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram

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

        self.rate_limited = Counter(
            "llmloom_api_rate_limited",
            "Requests refused with 429, by the limit they hit (requests, tokens, budget)",
            ["tenant", "limit"],
            registry=self.registry,
        )

    def count_tokens(self, tenant: str, flavor: str, prompt: int, completion: int) -> None:
        self.tokens.labels(tenant, flavor, "prompt").inc(prompt)
        self.tokens.labels(tenant, flavor, "completion").inc(completion)


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))


def install(app: FastAPI, metrics: ApiMetrics, max_body_bytes: int) -> None:
    """Add the request-id, logging, metrics and body-limit middleware to the app."""

    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        request_id = request.headers.get(REQUEST_ID) or uuid.uuid4().hex
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            response: Response = JSONResponse(
                envelope(
                    f"request body of {length} bytes is over the limit of {max_body_bytes}",
                    "invalid_request_error",
                    None,
                    "request_too_large",
                ),
                413,
            )
        else:
            response = await call_next(request)
        elapsed = time.perf_counter() - started
        route = _route(request)
        response.headers[REQUEST_ID] = request_id
        provider = response.headers.get(PROVIDER_MS)
        if provider is not None:
            overhead = max(0.0, elapsed - float(provider) / 1000)
            response.headers[OVERHEAD_MS] = f"{overhead * 1000:.1f}"
            metrics.overhead.labels(route).observe(overhead)
        metrics.requests.labels(route, request.method, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(elapsed)
        log.info(
            json.dumps(
                {
                    "request_id": request_id,
                    "method": request.method,
                    "path": request.url.path,
                    "status": response.status_code,
                    "ms": round(elapsed * 1000, 1),
                    "task": response.headers.get("X-LLMLoom-Task"),
                }
            )
        )
        return response
