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
from typing import Any

from llmloom import events, jobstatus, results, streams
from llmloom.kube import LLMJOBS, Obj
from llmloom.queues import JobRef
from llmloom.resources import LLMJob, Usage
from llmloom.worker.calls import answer
from llmloom.worker.deps import Deps, JobFailed
from llmloom.worker.inflight import Inflight, stop_reason

log = logging.getLogger(__name__)
COMPONENT = "llmloom-worker"


def deadline_left(job: LLMJob, now: float) -> float | None:
    """Seconds until the job's activeDeadlineSeconds passes (None: no deadline)."""
    if job.spec.active_deadline_seconds is None or job.metadata.creation_timestamp is None:
        return None
    return job.metadata.creation_timestamp.timestamp() + job.spec.active_deadline_seconds - now


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


async def process(deps: Deps, inflight: Inflight, ref: JobRef) -> str:
    """Run one job version. Returns a word for RQ's result: what happened."""
    stop = await inflight.enter(ref)
    try:
        return await _process(deps, inflight, ref, stop)
    finally:
        await inflight.leave(ref)


async def _process(deps: Deps, inflight: Inflight, ref: JobRef, stop: asyncio.Future[str]) -> str:
    # The watch's copy saves a read; a stale one only makes the first status write retry.
    obj = inflight.latest(ref) or await deps.kube.find(LLMJOBS, ref.namespace, ref.name)
    # The same test the watch applies while the job runs: deleted, edited, suspended, ended.
    reason = stop_reason(ref, obj)
    if reason is not None:
        return "already-finished" if reason == "ended-elsewhere" else reason
    assert obj is not None
    job = LLMJob.model_validate(obj)
    meta = {"name": ref.name, "namespace": ref.namespace, "uid": ref.uid}
    # Recording the start (status, then an Event) runs beside the provider call, not
    # before it: it is bookkeeping, and the caller is waiting for the answer. The call
    # is created first so that its request is sent first.
    attempt = asyncio.create_task(_attempt(deps, job))
    started = asyncio.create_task(_record_start(deps, ref, obj, meta))
    either: list[asyncio.Future[Any]] = [attempt, stop]
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    key = streams.stream_key(ref.uid, ref.generation)
    if not attempt.done():
        attempt.cancel()  # stops the provider call: the job was deleted, edited or suspended
        log.info("job %s/%s stopped: %s", ref.namespace, ref.name, stop.result())
        if job.spec.stream:
            await streams.finish(
                deps.redis,
                key,
                {"reason": "Cancelled", "message": f"the job was {stop.result()}"},
            )
        await _quietly(started)
        return f"cancelled-{stop.result()}"
    outcome, usage, used = attempt.result()
    stored, nbytes = await results.store(
        deps.redis, ref.uid, ref.generation, outcome, deps.settings.result_ttl_seconds
    )
    if job.spec.stream:
        await streams.finish(deps.redis, key, stored.error.model_dump() if stored.error else None)
    running = await _quietly(started)  # "Running" must not land after "Succeeded"
    await deps.kube.update_status(
        LLMJOBS,
        ref.namespace,
        ref.name,
        jobstatus.mark_finished(ref, stored, nbytes, usage, used),
        uid=ref.uid,
        generation=ref.generation,
        current=running,  # saves a read; a newer object makes the write retry from a fresh one
    )
    if stored.ok and events.routine_events(obj["metadata"]):
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


async def _record_start(deps: Deps, ref: JobRef, obj: Obj, meta: dict[str, str]) -> Obj | None:
    """Mark the version running (from the object just read: one write); post Started
    when this is not the first attempt.

    Returns:
        The job as written, which the final status write starts from.
    """
    running = await deps.kube.update_status(
        LLMJOBS,
        ref.namespace,
        ref.name,
        jobstatus.mark_running(),
        uid=ref.uid,
        generation=ref.generation,
        current=obj,
    )
    if running is None:
        return None  # gone or edited: the watch stops the attempt
    attempt_no = running.get("status", {}).get("attempts", 1)
    if attempt_no == 1:
        # A first start is in the status (startTime, Running); an Event per job would
        # cost the API server a write per job at dozens of jobs a second.
        return running
    await events.post(
        deps.kube,
        "LLMJob",
        meta,
        "Started",
        f"attempt {attempt_no} on flavor {obj['spec']['flavor']}",
        component=COMPONENT,
    )
    return running


async def _quietly(task: asyncio.Task[Obj | None]) -> Obj | None:
    """Wait for a bookkeeping task; its failure is logged, never the job's."""
    try:
        return await task
    except Exception as exc:
        log.warning("could not record the start of a job: %s", exc)
        return None
