"""The job function RQ records, and the event loop the jobs really run on.

Every queue entry names ``run_job`` with the job reference as its JSON
argument, so RQ's tools (``rq info``, dashboards) show what each job is. The
LLMLoom worker (``runner``) runs the work itself as coroutines on one event
loop in a background thread, where the clients (API server, Redis, an HTTP
pool to the model server) live for the whole process and connections stay
warm across jobs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

from llmloom import httpio, redisclients
from llmloom.kube import Kube
from llmloom.queues import JobRef
from llmloom.settings import WorkerSettings
from llmloom.worker.batchlines import process_line
from llmloom.worker.deps import Deps
from llmloom.worker.inflight import Inflight
from llmloom.worker.processing import process

T = TypeVar("T")


class Context:
    """An event loop in a thread, with the clients processing needs."""

    def __init__(self, settings: WorkerSettings, max_connections: int = 256) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="llmloom-io", daemon=True)
        self.thread.start()
        self.deps = self.call(self._connect(settings, max_connections))
        self.inflight = Inflight(self.deps)
        self.loop.call_soon_threadsafe(self.inflight.start)

    async def _connect(self, settings: WorkerSettings, max_connections: int) -> Deps:
        return Deps(
            settings=settings,
            kube=Kube.connect(settings.kubeconfig, max_connections=16),
            redis=redisclients.connect_async(settings.redis_url, max_connections=max_connections),
            http=httpio.session(max_connections),
        )

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start a coroutine on the context's loop."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the context's loop and wait for its result."""
        return self.submit(coro).result()

    async def run(self, payload: dict[str, Any], attempt: int) -> str:
        """Run what a queue entry refers to: a job version (its ``attempt``-th start), or a
        line of a batch."""
        ref = JobRef.model_validate(payload)
        if ref.line is not None:
            return await process_line(self.deps, self.inflight, ref)
        return await process(self.deps, self.inflight, ref, attempt)

    async def _close(self) -> None:
        await self.inflight.close()
        await self.deps.kube.aclose()
        await self.deps.http.close()
        if self.deps.documents is not None:
            await self.deps.documents.close()
        await self.deps.redis.aclose()

    def close(self) -> None:
        self.call(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def run_job(payload: dict[str, Any]) -> str:
    """The function queue entries name. RQ's own workers cannot run it: they would
    run one job per process, and LLMLoom jobs need the worker's context."""
    raise RuntimeError(
        f"LLMLoom jobs are run by `llmloom worker`, not by RQ's own workers ({payload})"
    )
