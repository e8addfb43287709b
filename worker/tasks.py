"""The function RQ calls for each job, and the process context it runs in.

RQ calls a plain importable function with JSON arguments. The clients it needs
(API server, Redis, HTTP pool) live for the whole worker process on one event
loop in a background thread, so connections are reused across jobs; the
worker installs that context once at start with ``install``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
from redis.asyncio import Redis

from llmloom.kube import Kube
from llmloom.queues import JobRef
from llmloom.settings import WorkerSettings
from llmloom.worker.deps import Deps
from llmloom.worker.processing import process


class Context:
    """An event loop in a thread, with the clients processing needs."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="llmloom-io", daemon=True)
        self.thread.start()
        self.deps = self.call(self._connect(settings))

    async def _connect(self, settings: WorkerSettings) -> Deps:
        return Deps(
            settings=settings,
            kube=Kube.connect(settings.kubeconfig),
            redis=Redis.from_url(settings.redis_url),
            http=httpx.AsyncClient(limits=httpx.Limits(max_connections=256)),
        )

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the context's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def _close(self) -> None:
        await self.deps.kube.aclose()
        await self.deps.http.aclose()
        await self.deps.redis.aclose()

    def close(self) -> None:
        self.call(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


_context: Context | None = None


def install(context: Context | None) -> None:
    """Set (or clear) the process's context; the worker does this once at start."""
    global _context
    _context = context


def run_job(payload: dict[str, Any]) -> str:
    """RQ's entry point: run the job version the payload refers to."""
    if _context is None:
        raise RuntimeError("the LLMLoom worker context is not installed (run `llmloom worker`)")
    result: str = _context.call(process(_context.deps, JobRef.model_validate(payload)))
    return result
