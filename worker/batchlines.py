"""Runs one line of a batch: a work item of its own, not an LLMJob.

A batch's lines cost the API server nothing: the worker takes a line from its
flavor's queue (the low band) as it takes a job, reads the prepared request
(body and flavor) from Redis, sends it through the same retries, fallback and
failover as a job's call, and records its line of the output or error file,
counted in the batch and in the tenant's usage in one step, once. A line
recorded already (it ran twice after a worker died) is not run again. A
cancelled or expired batch is announced on Redis, and its lines in flight stop
at once (``inflight``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from llmloom import batches, batchlines, results
from llmloom.queues import JobRef
from llmloom.resources import LLMJob, LLMJobSpec, ObjectMeta
from llmloom.worker.bodies import Call
from llmloom.worker.calls import complete
from llmloom.worker.deps import Deps, JobFailed
from llmloom.worker.inflight import Inflight

log = logging.getLogger(__name__)


def line_job(ref: JobRef, index: int, request: batches.Prepared, endpoint: str) -> LLMJob:
    """What the call machinery needs of a line: its namespace, flavor and an identity."""
    return LLMJob(
        metadata=ObjectMeta(
            namespace=ref.namespace,
            name=batches.request_id(ref.name, index),
            uid=f"{ref.uid}-l{index}",
            generation=1,
        ),
        spec=LLMJobSpec(
            flavor=request.flavor or "",
            task="embeddings" if endpoint == "/v1/embeddings" else "chat",
            priority=batches.PRIORITY,
        ),
    )


async def _outcome(deps: Deps, job: LLMJob, call: Call) -> results.Outcome:
    try:
        got = await complete(deps, job, call)
    except JobFailed as exc:
        return results.Outcome(
            ok=False,
            error=results.ErrorInfo(
                reason=exc.reason, message=exc.message, status_code=exc.status_code
            ),
        )
    return results.Outcome(
        ok=True, response=got.response, flavor=got.flavor, usage=got.usage.wire()
    )


async def process_line(deps: Deps, inflight: Inflight, ref: JobRef) -> str:
    """Run one line of a batch. Returns a word for RQ's result: what happened."""
    if ref.line is None:
        raise ValueError(f"not a batch line: {ref}")
    stop = await inflight.enter(ref)
    try:
        return await _process_line(deps, ref, ref.line, stop)
    finally:
        await inflight.leave(ref)


async def _process_line(deps: Deps, ref: JobRef, index: int, stop: asyncio.Future[str]) -> str:
    redis, ttl = deps.redis, deps.settings.file_ttl_seconds
    header = await deps.cached(
        ("batch", ref.namespace, ref.name, ref.uid),
        lambda: batches.load_header(redis, ref.namespace, ref.name),
    )
    request = await batches.load_line(redis, ref.namespace, ref.name, index)
    if header is None or request is None or request.body is None:
        return "gone"  # the batch was deleted, or Redis lost it: nothing to run
    if await batches.recorded(redis, ref.uid, [index]):
        return "already-recorded"
    job = line_job(ref, index, request, header.endpoint)
    body: dict[str, Any] = {k: v for k, v in request.body.items() if k not in ("model", "stream")}
    attempt = asyncio.create_task(_outcome(deps, job, Call(header.endpoint, body)))
    either: list[asyncio.Future[Any]] = [attempt, stop]
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if not attempt.done():
        attempt.cancel()  # the batch was cancelled or expired: the operator writes its line
        log.info(
            "line %d of batch %s/%s stopped: %s", index, ref.namespace, ref.name, stop.result()
        )
        return f"cancelled-{stop.result()}"
    outcome = attempt.result()
    line = batchlines.response_line(request, job.metadata.name, ref.uid, outcome)
    answered = outcome.flavor or request.flavor or ""
    await batches.record(redis, ref.uid, index, line, ttl, header, (request.flavor or "", answered))
    return "succeeded" if outcome.ok else "failed"
