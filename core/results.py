"""Where job results live (Redis, never etcd) and how waiters learn of them.

A result is an ``Outcome``: the provider's OpenAI-shaped response, or the error
that ended the job. It is written once per job version (SET NX): a retried or
duplicated delivery finds the first outcome and reuses it, so a user never sees
two answers. After writing, the worker publishes the job's uid on the done
channel; the API waits on that.

A request's task outlives its LLMJob (deleted minutes after its answer was
delivered): a ``TaskRecord`` names the job version behind a task id for as
long as its result lives, so ``GET /v1/tasks/{id}`` needs no API server.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from redis.asyncio import Redis

DONE_CHANNEL_PREFIX = "llmloom:done:"


class ErrorInfo(BaseModel):
    """Why a job failed, in words for a person and codes for a program."""

    reason: str
    """CamelCase reason, as in the Failed condition."""
    message: str
    status_code: int = 502
    """HTTP status the API answers with for this failure."""
    type: str = "upstream_error"
    """OpenAI error type for the envelope."""


class Outcome(BaseModel):
    """The stored end of one job version."""

    ok: bool
    response: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    flavor: str | None = None
    """The flavor that answered."""
    usage: dict[str, Any] | None = None
    """Tokens spent, as in the job's status.usage."""
    provider_ms: float | None = None
    """Time the answering provider call took: the rest of a request's time is LLMLoom's."""


class TaskRecord(BaseModel):
    """The job version behind a request's task id."""

    uid: str
    generation: int
    created: int
    """When the request came (epoch seconds)."""
    flavor: str


def task_key(namespace: str, name: str) -> str:
    return f"llmloom:task:{namespace}/{name}"


async def remember_task(
    redis: Redis, namespace: str, name: str, record: TaskRecord, ttl: int
) -> None:
    await redis.set(task_key(namespace, name), record.model_dump_json(), ex=ttl)


async def forget_task(redis: Redis, namespace: str, name: str) -> None:
    await redis.delete(task_key(namespace, name))


async def task_record(redis: Redis, namespace: str, name: str) -> TaskRecord | None:
    data = await redis.get(task_key(namespace, name))
    return None if data is None else TaskRecord.model_validate_json(data)


def result_key(uid: str, version: int) -> str:
    """Redis key of the result of one job version."""
    return f"llmloom:result:{uid}:v{version}"


def done_channel(uid: str) -> str:
    """Pub/sub channel announcing that a job version finished."""
    return DONE_CHANNEL_PREFIX + uid


async def store(
    redis: Redis, uid: str, version: int, outcome: Outcome, ttl: int
) -> tuple[Outcome, int]:
    """Write the outcome unless one exists, announce it, and return the one that stands.

    Returns:
        The stored outcome (this one, or the earlier one) and its size in bytes.
    """
    key = result_key(uid, version)
    data = outcome.model_dump_json(exclude_none=True)
    # One round trip: the announcement only says that this version has a result, so
    # it may go out before we know whose result stands.
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(key, data, nx=True, ex=ttl)
        pipe.publish(done_channel(uid), json.dumps({"version": version}))
        written, _ = await pipe.execute()
    if not written:
        existing = await redis.get(key)
        if existing is not None:
            data = existing.decode() if isinstance(existing, bytes) else existing
            outcome = Outcome.model_validate_json(data)
    return outcome, len(data.encode())


async def load(redis: Redis, uid: str, version: int) -> Outcome | None:
    """The stored outcome of one job version, or None while it runs."""
    data = await redis.get(result_key(uid, version))
    return None if data is None else Outcome.model_validate_json(data)
