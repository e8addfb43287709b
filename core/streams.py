"""Deltas of a streamed answer, from the worker to the API, through Redis Streams.

The worker appends each chunk (an OpenAI ``chat.completion.chunk``, a text
completion's chunk, or a Responses event) to the job version's stream as the
provider produces it, then an end marker (with the
error, if the job failed). A reader starts from the stream's beginning, so the
API never misses the first tokens however late it subscribes; the stream
expires an hour after its end.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis

TTL_SECONDS = 3600


def stream_key(uid: str, version: int) -> str:
    return f"llmloom:deltas:{uid}:v{version}"


async def publish(redis: Redis, key: str, chunk: dict[str, Any]) -> None:
    """Append one chunk."""
    await redis.xadd(key, {"chunk": json.dumps(chunk)})


async def finish(redis: Redis, key: str, error: dict[str, Any] | None = None) -> None:
    """Mark the end of the stream (with the job's error, if it failed)."""
    await redis.xadd(key, {"end": json.dumps(error) if error else ""})
    await redis.expire(key, TTL_SECONDS)


async def read(
    redis: Redis, key: str, idle_seconds: float, keepalive_seconds: float | None = None
) -> AsyncIterator[tuple[str, dict[str, Any] | None]]:
    """Yield ("chunk", chunk) for each delta, then ("end", error or None); a stream that
    stays silent for ``idle_seconds`` ends with ("idle", None). With ``keepalive_seconds``,
    ("keepalive", None) comes after each such silence before that."""
    last = "0-0"
    silent = 0.0
    step = min(idle_seconds, keepalive_seconds) if keepalive_seconds else idle_seconds
    while True:
        # [[key, [(id, {field: value}), ...]]] (redis-py's annotation is looser than that)
        replies: Any = await redis.xread({key: last}, count=100, block=max(1, int(step * 1000)))
        if not replies:
            silent += step
            if silent >= idle_seconds:
                yield "idle", None
                return
            yield "keepalive", None
            continue
        silent = 0.0
        for entry_id, fields in replies[0][1]:
            last = entry_id
            fields = {k.decode() if isinstance(k, bytes) else k: v for k, v in fields.items()}
            if "end" in fields:
                raw = fields["end"]
                raw = raw.decode() if isinstance(raw, bytes) else raw
                yield "end", json.loads(raw) if raw else None
                return
            raw = fields["chunk"]
            yield "chunk", json.loads(raw.decode() if isinstance(raw, bytes) else raw)
