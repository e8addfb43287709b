"""A streamed answer as server-sent events, as OpenAI streams each endpoint.

The worker publishes the server's chunks (chat and text completions) or events
(the Responses API) to Redis as they come; this relays them: ``data:`` lines
ending with ``data: [DONE]`` for completions, ``event:`` and ``data:`` lines
for responses. While the request waits in the queue (a flavor scaling from
zero takes minutes) a comment line keeps the connection open every
``stream_keepalive_seconds`` (15): ingresses and proxies close a stream idle
for a minute.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from llmloom import streams, wire
from llmloom.api.errors import envelope
from llmloom.api.services import Services
from llmloom.resources import Endpoint, LLMJob

KEEPALIVE = b": keep-alive\n\n"


def _data(data: object) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def _error(endpoint: Endpoint, message: str, kind: str, code: str | None) -> bytes:
    if endpoint == wire.RESPONSES:
        error = {"type": "error", "code": code, "message": message, "param": None}
        return _event("error", error)
    return _data(envelope(message, kind, code=code))


async def relay(
    services: Services, job: LLMJob, endpoint: Endpoint, include_usage: bool
) -> AsyncIterator[bytes]:
    """The job's chunks or events, as OpenAI streams them."""
    key = streams.stream_key(job.metadata.uid, job.metadata.generation)
    idle = services.settings.max_wait_seconds
    every = services.settings.stream_keepalive_seconds
    async for kind, item in streams.read(services.redis, key, idle, every):
        if kind == "keepalive":
            yield KEEPALIVE
        elif kind == "chunk" and item is not None:
            if endpoint == wire.RESPONSES:
                yield _event(str(item.get("type") or "message"), item)
                continue
            if not include_usage:
                if not item.get("choices"):
                    continue  # the usage chunk the client did not ask for
                item = {k: v for k, v in item.items() if k != "usage"}
            yield _data(item)
        elif kind == "end" and item:
            message = str(item.get("message", "the job failed"))
            yield _error(
                endpoint, message, str(item.get("type", "upstream_error")), item.get("reason")
            )
        elif kind == "idle":
            yield _error(endpoint, f"no answer within {idle:g}s", "timeout", "timeout")
    if endpoint != wire.RESPONSES:
        yield _data("[DONE]")
