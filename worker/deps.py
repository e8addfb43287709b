"""What job processing needs from its worker process, and how a job fails."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from redis.asyncio import Redis

from llmloom.kube import Kube
from llmloom.resources import Flavor
from llmloom.settings import WorkerSettings
from llmloom.worker.egress import DocumentClient, networks

T = TypeVar("T")
SHARED_SUFFIX = "@*"
"""A worker's queue ``name@*``: every tenant's queue of the shared model ``name``."""


@dataclass
class Deps:
    """What processing needs from its process: clients and settings."""

    settings: WorkerSettings
    kube: Kube
    redis: Redis
    http: aiohttp.ClientSession
    """Calls to model servers."""
    documents: DocumentClient | None = None
    """Document URLs (public addresses only: ``egress``), made on first use."""
    cache: dict[tuple[str, ...], tuple[float, Any]] = field(default_factory=dict)
    """Objects read from the API server lately (flavors, API keys), with when."""
    call_slots: dict[tuple[str, str], tuple[int, asyncio.Semaphore]] = field(default_factory=dict)
    """Per flavor: how many calls may be in flight, and the semaphore that holds them."""

    async def cached(self, key: tuple[str, ...], load: Callable[[], Awaitable[T]]) -> T:
        """What ``load`` returned at most ``flavor_cache_seconds`` ago: a worker running
        dozens of jobs a second would otherwise read the same objects for every one."""
        now = time.monotonic()
        hit = self.cache.get(key)
        if hit is not None and now - hit[0] < self.settings.flavor_cache_seconds:
            value: T = hit[1]
            return value
        value = await load()
        self.cache[key] = (now, value)
        return value

    def document_client(self) -> DocumentClient:
        """The client for document URLs (on the loop that uses it)."""
        if self.documents is None:
            allowed = networks(self.settings.document_allowed_networks)
            self.documents = DocumentClient.create(allowed)
        return self.documents

    @property
    def serves_shared(self) -> bool:
        """This worker serves a shared model (its queue is ``name@*``)."""
        return any(q.endswith(SHARED_SUFFIX) for q in self.settings.queues)

    def call_slot(self, flavor: Flavor) -> asyncio.Semaphore:
        """Holds provider calls to ``flavor`` from this process to its ``concurrency``
        (or the worker's), shared by every job: a document job's parallel calls too."""
        limit = self.settings.concurrency or flavor.spec.concurrency
        key = (flavor.metadata.namespace, flavor.metadata.name)
        held = self.call_slots.get(key)
        if held is None or held[0] != limit:  # new, or the flavor's concurrency changed
            held = self.call_slots[key] = (limit, asyncio.Semaphore(limit))
        return held[1]


class JobFailed(Exception):
    """The job cannot succeed; the reason goes into its Failed condition."""

    def __init__(self, reason: str, message: str, status_code: int = 502) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason, self.message, self.status_code = reason, message, status_code
