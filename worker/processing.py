"""Runs one job version end to end: read, call the provider, store, report.

The LLMJob resource is the source of truth and the queue entry only a
reference, so every step starts from the object as the API server has it: a
deleted, recreated or edited job is recognised and left alone. Status is
written read-modify-write with the resourceVersion as a precondition, so the
operator's conditions are never lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from llmloom import conditions, events, jobstatus, queues, results, streams
from llmloom.kube import LLMJOBS, KubeError, Obj
from llmloom.queues import JobRef
from llmloom.resources import LLMJob, Usage
from llmloom.worker.calls import answer
from llmloom.worker.deps import Deps, JobFailed

log = logging.getLogger(__name__)
COMPONENT = "llmloom-worker"


async def update_status(
    deps: Deps, ref: JobRef, mutate: Callable[[dict[str, Any]], None]
) -> Obj | None:
    """Write the status of exactly this job version (None: it is gone or was edited)."""
    return await deps.kube.update_status(
        LLMJOBS, ref.namespace, ref.name, mutate, uid=ref.uid, generation=ref.generation
    )


def deadline_left(job: LLMJob, now: float) -> float | None:
    """Seconds until the job's activeDeadlineSeconds passes (None: no deadline)."""
    if job.spec.active_deadline_seconds is None or job.metadata.creation_timestamp is None:
        return None
    return job.metadata.creation_timestamp.timestamp() + job.spec.active_deadline_seconds - now


async def renew_lease(deps: Deps, ref: JobRef) -> None:
    """Show the operator that this worker is alive and running the job version."""
    ttl_ms = int(deps.settings.lease_seconds * 1000)
    await deps.redis.set(queues.lease_key(ref), "1", px=ttl_ms)


async def watch_for_cancel(deps: Deps, ref: JobRef) -> str:
    """Renew the lease, and return as soon as the job should stop: deleted, edited,
    suspended or ended elsewhere."""
    every = min(deps.settings.cancel_poll_seconds, deps.settings.lease_seconds / 3)
    while True:
        await asyncio.sleep(every)
        await renew_lease(deps, ref)
        try:
            job = LLMJob.model_validate(await deps.kube.get(LLMJOBS, ref.namespace, ref.name))
        except KubeError as exc:
            if exc.code == 404:
                return "deleted"
            continue  # the API server hiccupped; the attempt goes on
        if job.metadata.uid != ref.uid or job.metadata.generation != ref.generation:
            return "superseded"
        if job.spec.suspend:
            return "suspended"
        if conditions.finished([c.wire() for c in job.status.conditions], ref.generation):
            return "ended-elsewhere"  # e.g. failed by the operator at its deadline


async def _attempt(deps: Deps, job: LLMJob) -> tuple[results.Outcome, Usage | None, str | None]:
    """One attempt, bounded by the job's deadline: the outcome, usage, flavor that answered."""
    left = deadline_left(job, time.time())
    try:
        if left is not None and left <= 0:
            raise TimeoutError
        async with asyncio.timeout(left):
            got = await answer(deps, job)
    except TimeoutError:
        return (
            _failure(
                "DeadlineExceeded",
                f"not finished within activeDeadlineSeconds={job.spec.active_deadline_seconds}",
                504,
            ),
            None,
            None,
        )
    except JobFailed as exc:
        return _failure(exc.reason, exc.message, exc.status_code), None, None
    outcome = results.Outcome(
        ok=True,
        response=got.response,
        flavor=got.flavor,
        usage=got.usage.wire(),
        provider_ms=round(got.provider_ms, 1),
    )
    return outcome, got.usage, got.flavor


def _failure(reason: str, message: str, status_code: int) -> results.Outcome:
    return results.Outcome(
        ok=False,
        error=results.ErrorInfo(reason=reason, message=message, status_code=status_code),
    )


async def process(deps: Deps, ref: JobRef) -> str:
    """Run one job version. Returns a word for RQ's result: what happened."""
    await renew_lease(deps, ref)
    try:
        return await _process(deps, ref)
    finally:
        await deps.redis.delete(queues.lease_key(ref))


async def _process(deps: Deps, ref: JobRef) -> str:
    try:
        job = LLMJob.model_validate(await deps.kube.get(LLMJOBS, ref.namespace, ref.name))
    except KubeError as exc:
        if exc.code == 404:
            return "deleted"
        raise
    if job.metadata.uid != ref.uid or job.metadata.generation != ref.generation:
        return "superseded"
    if job.spec.suspend:
        return "suspended"
    if conditions.finished([c.wire() for c in job.status.conditions], ref.generation):
        return "already-finished"
    running = await update_status(deps, ref, jobstatus.mark_running())
    if running is None:
        return "superseded"
    meta = {"name": ref.name, "namespace": ref.namespace, "uid": ref.uid}
    attempt_no = running.get("status", {}).get("attempts", 1)
    await events.post(
        deps.kube,
        "LLMJob",
        meta,
        "Started",
        f"attempt {attempt_no} on flavor {job.spec.flavor}",
        component=COMPONENT,
    )

    attempt = asyncio.create_task(_attempt(deps, job))
    watcher = asyncio.create_task(watch_for_cancel(deps, ref))
    await asyncio.wait({attempt, watcher}, return_when=asyncio.FIRST_COMPLETED)
    key = streams.stream_key(ref.uid, ref.generation)
    if not attempt.done():
        attempt.cancel()  # stops the provider call: the job was deleted, edited or suspended
        log.info("job %s/%s stopped: %s", ref.namespace, ref.name, watcher.result())
        if job.spec.stream:
            await streams.finish(
                deps.redis,
                key,
                {"reason": "Cancelled", "message": f"the job was {watcher.result()}"},
            )
        return f"cancelled-{watcher.result()}"
    watcher.cancel()
    outcome, usage, used = attempt.result()
    stored, nbytes = await results.store(
        deps.redis, ref.uid, ref.generation, outcome, deps.settings.result_ttl_seconds
    )
    if job.spec.stream:
        await streams.finish(deps.redis, key, stored.error.model_dump() if stored.error else None)
    await update_status(deps, ref, jobstatus.mark_finished(ref, stored, nbytes, usage, used))
    if stored.ok:
        tokens_used = usage.total_tokens if usage else 0
        await events.post(
            deps.kube,
            "LLMJob",
            meta,
            "Completed",
            f"result version {ref.generation} stored, {tokens_used} tokens",
            component=COMPONENT,
        )
    elif stored.error is not None:
        await events.post(
            deps.kube,
            "LLMJob",
            meta,
            stored.error.reason,
            stored.error.message,
            "Warning",
            COMPONENT,
        )
    state = "succeeded" if stored.ok else "failed"
    log.info("job %s/%s generation %d %s", ref.namespace, ref.name, ref.generation, state)
    return state
