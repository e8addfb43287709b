"""Requests stored beside the results: the body of an OpenAI API request, by reference.

An LLMJob that the API makes for a request carries ``spec.request`` (the
endpoint, the key, the size), never the prompt: an object stays a few hundred
bytes whatever the request, requests up to the API's body limit work, and
nobody who may read LLMJobs (or an etcd backup) reads prompts. The body is
kept as the client sent it, byte for byte, and sent to the model server with
only its ``model`` replaced by the flavor's.
"""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

from llmloom.resources import Endpoint, RequestRef

PREFIX = "llmloom:request:"


def reference(endpoint: Endpoint, body: bytes) -> RequestRef:
    """A fresh reference for a request's body (stored with ``store``)."""
    return RequestRef(endpoint=endpoint, key=PREFIX + secrets.token_hex(16), bytes=len(body))


async def store(redis: Redis, ref: RequestRef, body: bytes, ttl: int) -> None:
    """Keep a request's body for ``ttl`` seconds (the results' lifetime); ``redis`` may be
    a pipeline."""
    await redis.set(ref.key, body, ex=ttl)


async def load(redis: Redis, ref: RequestRef) -> bytes | None:
    """The body, or None when Redis no longer has it (lost its data, or it expired)."""
    data = await redis.get(ref.key)
    return data.encode() if isinstance(data, str) else data


async def delete(redis: Redis, key: str) -> None:
    if key.startswith(PREFIX):  # never anything else, whatever a spec says
        await redis.delete(key)
