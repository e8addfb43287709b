"""Files of the OpenAI Files API, kept in Redis per tenant.

A file is bytes a tenant uploaded (a batch's input) or a batch wrote (its
output and error files), with its OpenAI file object. Both live in one Redis
hash per file, ``llmloom:file:<namespace>:<id>``, which expires with the file;
a sorted set per tenant, ``llmloom:files:<namespace>`` scored by creation
time, lists them. Files are not resources: they can be far larger than an etcd
object may be (about 1.5 MiB), and they are data, not desired state.
"""

from __future__ import annotations

import secrets
import string
import time
from typing import Literal

from pydantic import BaseModel
from redis.asyncio import Redis

ID_ALPHABET = string.ascii_letters + string.digits
Order = Literal["asc", "desc"]


class FileObject(BaseModel):
    """A file as the OpenAI API describes it."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FilePage(BaseModel):
    """One page of a tenant's files, newest first unless asked otherwise."""

    data: list[FileObject]
    has_more: bool


def new_id() -> str:
    """A fresh file id, shaped as OpenAI's (``file-`` and 24 letters and digits)."""
    return "file-" + "".join(secrets.choice(ID_ALPHABET) for _ in range(24))


def file_key(namespace: str, file_id: str) -> str:
    return f"llmloom:file:{namespace}:{file_id}"


def index_key(namespace: str) -> str:
    return f"llmloom:files:{namespace}"


async def get(redis: Redis, namespace: str, file_id: str) -> FileObject | None:
    """The tenant's file object, or None (no such file, another tenant's, or expired)."""
    raw = await redis.hget(file_key(namespace, file_id), "meta")
    return None if raw is None else FileObject.model_validate_json(raw)


async def content(redis: Redis, namespace: str, file_id: str) -> bytes | None:
    """The bytes of the tenant's file, or None."""
    data = await redis.hget(file_key(namespace, file_id), "data")
    if data is None:
        return None
    return data if isinstance(data, bytes) else data.encode()


async def create(
    redis: Redis,
    namespace: str,
    data: bytes,
    filename: str,
    purpose: str,
    ttl: int,
    file_id: str | None = None,
) -> FileObject:
    """Store a file for ``ttl`` seconds.

    Args:
        file_id: a chosen id (a batch's output file, written again after a crash):
            when a file of that id exists, it is kept and returned.

    Returns:
        The file object.
    """
    if file_id is not None:
        existing = await get(redis, namespace, file_id)
        if existing is not None:
            return existing
    now = time.time()
    obj = FileObject(
        id=file_id or new_id(),
        bytes=len(data),
        created_at=int(now),
        filename=filename,
        purpose=purpose,
        expires_at=int(now) + ttl,
    )
    key = file_key(namespace, obj.id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping={"meta": obj.model_dump_json(), "data": data})
        pipe.expire(key, ttl)
        pipe.zadd(index_key(namespace), {obj.id: now})
        await pipe.execute()
    return obj


async def delete(redis: Redis, namespace: str, file_id: str) -> bool:
    """Delete the tenant's file; False when there was none."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(file_key(namespace, file_id))
        pipe.zrem(index_key(namespace), file_id)
        deleted, _ = await pipe.execute()
    return bool(deleted)


def paginate(
    items: list[FileObject], after: str | None, limit: int, order: Order
) -> tuple[list[FileObject], bool]:
    """One page of ``items`` (oldest first) in ``order``, after the id ``after``.

    An ``after`` that is not among them (deleted, expired) gives an empty page: starting
    over would make a client that follows ``has_more`` loop for ever."""
    ordered = items if order == "asc" else list(reversed(items))
    start = 0
    if after is not None:
        ids = [f.id for f in ordered]
        if after not in ids:
            return [], False
        start = ids.index(after) + 1
    page = ordered[start : start + limit]
    return page, start + limit < len(ordered)


async def list_files(
    redis: Redis,
    namespace: str,
    purpose: str | None = None,
    after: str | None = None,
    limit: int = 10_000,
    order: Order = "desc",
) -> FilePage:
    """The tenant's files, newest first (``order="desc"``), optionally of one purpose."""
    ids = [
        i.decode() if isinstance(i, bytes) else str(i)
        for i in await redis.zrange(index_key(namespace), 0, -1)
    ]
    async with redis.pipeline(transaction=False) as pipe:
        for file_id in ids:
            pipe.hget(file_key(namespace, file_id), "meta")
        metas = await pipe.execute() if ids else []
    found: list[FileObject] = []
    gone: list[str] = []
    for file_id, raw in zip(ids, metas, strict=True):
        if raw is None:
            gone.append(file_id)  # expired: its hash went, its index entry stayed
        else:
            found.append(FileObject.model_validate_json(raw))
    if gone:
        await redis.zrem(index_key(namespace), *gone)
    if purpose is not None:
        found = [f for f in found if f.purpose == purpose]
    page, has_more = paginate(found, after, limit, order)
    return FilePage(data=page, has_more=has_more)
