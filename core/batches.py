"""The Batch API's file formats and the state a batch keeps in Redis.

A batch's life is shared by three components, and none of its lines is an
LLMJob: the LLMBatch is the resource, its lines are work items.

- The API reads the input file (``llmloom.api.batchfile``), checks each line as
  the same request to /v1/chat/completions or /v1/embeddings would be checked,
  and stores it as a ``Prepared`` line (its body and flavor, or the error it
  would have got), then creates the LLMBatch.
- The operator puts the lines on their flavors' queues (the low band), a
  window at a time, re-queues a line whose worker died, and writes the
  batch's status from the counts here, at most once a pass; at the end it
  writes the output and error files.
- A worker takes a line as it takes a job, sends its body, and records its
  line of the output or error file (``record``: once, counted in the batch
  and in the tenant's usage in the same step).

A cancelled batch is announced on ``cancel_channel``: workers stop its lines
in flight at once.

Names: an OpenAI batch id ``batch_<hex>`` is the LLMBatch ``batch-<hex>``
(Kubernetes names allow no underscore); the requests of its output file are
``<batch>-<position>``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from redis.asyncio import Redis

from llmloom.resources import BatchError, Endpoint, RequestCounts, Usage

ENDPOINTS: tuple[Endpoint, ...] = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/embeddings",
)
COMPLETION_WINDOWS = {"24h": 24 * 3600}
PRIORITY = -1
"""A batch's lines wait behind every interactive request of their flavor (the low band)."""
TERMINAL = frozenset({"failed", "completed", "expired", "cancelled"})

ID_PREFIX, NAME_PREFIX = "batch_", "batch-"


def new_name() -> str:
    """A fresh LLMBatch name (``batch-`` and 24 hex digits)."""
    return NAME_PREFIX + secrets.token_hex(12)


def batch_id(name: str) -> str:
    """The OpenAI id of an LLMBatch: ``batch-x`` is ``batch_x``; other names stay."""
    return ID_PREFIX + name[len(NAME_PREFIX) :] if name.startswith(NAME_PREFIX) else name


def batch_name(batch_id: str) -> str:
    """The LLMBatch name of an OpenAI batch id (the inverse of ``batch_id``)."""
    if batch_id.startswith(ID_PREFIX):
        return NAME_PREFIX + batch_id[len(ID_PREFIX) :]
    return batch_id


MAX_NAME_LENGTH = 56
"""The longest LLMBatch name (the CRD's rule: room for the jobs' ``-<line>``)."""


def request_id(batch: str, index: int) -> str:
    """The id an output line gives the request that ran (OpenAI's ``request_id``)."""
    return f"{batch}-{index}"


class LineError(BaseModel):
    """The error a request got, as an HTTP status and OpenAI's error envelope."""

    status_code: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class Prepared(BaseModel):
    """One request of a batch, ready to run: its body and flavor, or the error it got."""

    line: int
    custom_id: str
    flavor: str | None = None
    """The flavor its model resolved to."""
    body: dict[str, Any] | None = None
    """The request's body, as the client wrote it (sent with the flavor's model)."""
    error: LineError | None = None
    encoding_format: Literal["float", "base64"] = "float"
    """Embeddings: how the vectors are written to the output file."""


class PreparedHeader(BaseModel):
    """What the API found in the input file: how many requests, or why it is refused."""

    total: int
    endpoint: Endpoint = "/v1/chat/completions"
    """The API every request of the batch goes to."""
    errors: list[BatchError] = []
    usage_key: str | None = None
    """The tenant's usage hash its requests and tokens are counted in as its lines end
    (the API knows the tenant's budget period, the operator does not)."""
    usage_ttl: int = 0


def requests_key(namespace: str, name: str) -> str:
    """Redis list of a batch's ``Prepared`` requests, in line order (written by the API)."""
    return f"llmloom:batch:{namespace}:{name}:requests"


def header_key(namespace: str, name: str) -> str:
    return f"llmloom:batch:{namespace}:{name}:header"


def results_key(uid: str) -> str:
    """Redis hash of the requests that ended: line -> ``{"ok": bool, "line": "..."}``."""
    return f"llmloom:batch:{uid}:results"


def counts_key(uid: str) -> str:
    """Redis hash of a batch's progress: the next line to run, counts and tokens."""
    return f"llmloom:batch:{uid}:counts"


async def store_prepared(
    redis: Redis,
    namespace: str,
    name: str,
    header: PreparedHeader,
    requests: list[Prepared],
    ttl: int,
    chunk: int = 1000,
) -> None:
    """Write a batch's requests before its LLMBatch exists (the operator reads them)."""
    rkey, hkey = requests_key(namespace, name), header_key(namespace, name)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.delete(rkey)
        for i in range(0, len(requests), chunk):
            pipe.rpush(
                rkey, *(r.model_dump_json(exclude_none=True) for r in requests[i : i + chunk])
            )
        pipe.expire(rkey, ttl)
        pipe.set(hkey, header.model_dump_json(exclude_none=True), ex=ttl)
        await pipe.execute()


async def load_header(redis: Redis, namespace: str, name: str) -> PreparedHeader | None:
    raw = await redis.get(header_key(namespace, name))
    return None if raw is None else PreparedHeader.model_validate_json(raw)


async def load_prepared(
    redis: Redis, namespace: str, name: str, start: int, count: int
) -> list[Prepared]:
    """Requests ``start`` to ``start + count`` (0-based positions in the list)."""
    raw = await redis.lrange(requests_key(namespace, name), start, start + count - 1)
    return [Prepared.model_validate_json(r) for r in raw]


async def load_line(redis: Redis, namespace: str, name: str, index: int) -> Prepared | None:
    """The request at position ``index`` (0-based), if the batch still has it."""
    raw = await redis.lindex(requests_key(namespace, name), index)
    return None if raw is None else Prepared.model_validate_json(raw)


CANCEL_PREFIX = "llmloom:batch-cancel:"


def cancel_channel(uid: str) -> str:
    """Where a batch's cancellation (or expiry) is announced to the workers."""
    return CANCEL_PREFIX + uid


async def announce_cancel(redis: Redis, uid: str) -> None:
    await redis.publish(cancel_channel(uid), "1")


async def forget_prepared(redis: Redis, namespace: str, name: str) -> None:
    """Drop a batch's prepared requests."""
    await redis.delete(requests_key(namespace, name), header_key(namespace, name))


async def forget(redis: Redis, namespace: str, name: str, uid: str) -> None:
    """Drop a batch's working state (its files stay until their own TTL)."""
    await forget_prepared(redis, namespace, name)
    await redis.delete(results_key(uid), counts_key(uid))


# --------------------------------------------------------------------------- progress

RECORD_SCRIPT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
redis.call('HINCRBY', KEYS[2], 'promptTokens', ARGV[4])
redis.call('HINCRBY', KEYS[2], 'completionTokens', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
if KEYS[3] then
  local prompt, completion = tonumber(ARGV[4]), tonumber(ARGV[5])
  local asked, answered = 'f:' .. ARGV[7] .. ':', 'f:' .. ARGV[8] .. ':'
  redis.call('HINCRBY', KEYS[3], 'requests', 1)
  redis.call('HINCRBY', KEYS[3], asked .. 'requests', 1)
  for name, value in pairs({prompt_tokens = prompt, completion_tokens = completion,
                            total_tokens = prompt + completion}) do
    redis.call('HINCRBY', KEYS[3], name, value)
    redis.call('HINCRBY', KEYS[3], answered .. name, value)
  end
  redis.call('EXPIRE', KEYS[3], ARGV[9])
end
return 1
"""
"""Records one ended request once, and counts it in the same step (in the batch's
counts and, in the tenant's usage, as the API counts a request): a line run twice (its
worker died after recording it, and the operator queued it again) counts once."""


@dataclass(frozen=True)
class Line:
    """One line of the output (ok) or error file."""

    ok: bool
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


async def record(
    redis: Redis,
    uid: str,
    line: int,
    out: Line,
    ttl: int,
    header: PreparedHeader | None = None,
    flavors: tuple[str, str] = ("", ""),
) -> bool:
    """Record the end of one request of a batch, counted in the tenant's usage where
    ``header`` says (``flavors``: the one asked, the one that answered, as the API counts
    requests and tokens); False when it was recorded before."""
    value = json.dumps({"ok": out.ok, "line": out.text})
    counter = "completed" if out.ok else "failed"
    keys = [results_key(uid), counts_key(uid)]
    args: list[str | int] = [line, value, counter, out.prompt_tokens, out.completion_tokens, ttl]
    if header is not None and header.usage_key:
        keys.append(header.usage_key)
        args += [*flavors, header.usage_ttl]
    return bool(await redis.eval(RECORD_SCRIPT, len(keys), *keys, *args))


@dataclass(frozen=True)
class Progress:
    """A batch's progress as Redis holds it."""

    next: int = 0
    """Position of the next prepared request to queue."""
    low: int = 0
    """Position below which every request has ended (the window starts there)."""
    counts: RequestCounts = field(default_factory=RequestCounts)
    usage: Usage = field(default_factory=Usage)


async def progress(redis: Redis, uid: str, total: int) -> Progress:
    raw = await redis.hgetall(counts_key(uid))
    got = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
    prompt, completion = got.get("promptTokens", 0), got.get("completionTokens", 0)
    return Progress(
        next=got.get("next", 0),
        low=got.get("low", 0),
        counts=RequestCounts(
            total=total, completed=got.get("completed", 0), failed=got.get("failed", 0)
        ),
        usage=Usage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        ),
    )


async def advance(redis: Redis, uid: str, ttl: int, **positions: int) -> None:
    """Remember positions: ``next`` (requests before it were queued), ``low`` (requests
    before it ended)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(counts_key(uid), mapping=positions)  # type: ignore[arg-type]
        pipe.expire(counts_key(uid), ttl)
        await pipe.execute()


async def recorded(redis: Redis, uid: str, lines: list[int]) -> set[int]:
    """Which of these lines have ended already."""
    if not lines:
        return set()
    found = await redis.hmget(results_key(uid), [str(n) for n in lines])
    return {n for n, v in zip(lines, found, strict=True) if v is not None}


async def ended_lines(redis: Redis, uid: str) -> dict[int, tuple[bool, str]]:
    """Every recorded request: line -> (ok, the line of the output or error file)."""
    raw = await redis.hgetall(results_key(uid))
    out: dict[int, tuple[bool, str]] = {}
    for k, v in raw.items():
        item = json.loads(v)
        out[int(k)] = (bool(item["ok"]), str(item["line"]))
    return out


def output_file_id(uid: str, kind: Literal["output", "error"]) -> str:
    """The id of a batch's output or error file: fixed per batch, so that finalizing
    again after a crash finds the file it wrote instead of writing another."""
    return "file-" + hashlib.sha256(f"{uid}:{kind}".encode()).hexdigest()[:24]
