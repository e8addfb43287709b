"""Runs one job version end to end: read, call the provider, store, report.

The LLMJob resource is the source of truth and the queue entry only a
reference, so every step starts from the object as the API server has it: a
deleted, recreated or edited job is recognised and left alone. Status is
written read-modify-write with the resourceVersion as a precondition, so the
operator's conditions are never lost.

A request's job is the exception that makes a request cheap: its queue entry
carries its (small) spec, so it starts without a read, and the worker is the
one writer of its status, so the status is written whole in one request,
without a read or a precondition other than the job's uid.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from llmloom import API_VERSION, WORKER, events, jobstatus, origin, results, streams, timestamps
from llmloom.kube import LLMJOBS, KubeError, Obj
from llmloom.queues import JobRef
from llmloom.resources import LLMJob, Usage
from llmloom.worker import documents
from llmloom.worker.calls import Answer, complete
from llmloom.worker.deps import Deps, JobFailed
from llmloom.worker.inflight import Inflight, stop_reason

log = logging.getLogger(__name__)


def deadline_left(job: LLMJob, now: float) -> float | None:
    """Seconds until the job's activeDeadlineSeconds passes (None: no deadline)."""
    if job.spec.active_deadline_seconds is None or job.metadata.creation_timestamp is None:
        return None
    return job.metadata.creation_timestamp.timestamp() + job.spec.active_deadline_seconds - now


async def answer(deps: Deps, job: LLMJob) -> Answer:
    """The job's answer, by its task: a document job makes many calls, every other
    task one (each through retries, fallback and failover)."""
    if job.spec.task == "document":
        return await documents.answer(deps, job)
    return await complete(deps, job)


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


async def process(deps: Deps, inflight: Inflight, ref: JobRef, attempt: int = 1) -> str:
    """Run one job version (its ``attempt``-th start). Returns a word for RQ's result:
    what happened."""
    stop = await inflight.enter(ref)
    try:
        return await _process(deps, inflight, ref, stop, attempt)
    finally:
        await inflight.leave(ref)


def _from_entry(ref: JobRef) -> Obj:
    """A request's job as its queue entry describes it (no status yet: the worker writes
    all of it)."""
    meta: dict[str, Any] = {
        "name": ref.name,
        "namespace": ref.namespace,
        "uid": ref.uid,
        "generation": ref.generation,
        "labels": {origin.LABEL: origin.REQUEST},
    }
    if ref.created:
        meta["creationTimestamp"] = ref.created
    return {"apiVersion": API_VERSION, "kind": "LLMJob", "metadata": meta, "spec": ref.spec}


async def _process(
    deps: Deps, inflight: Inflight, ref: JobRef, stop: asyncio.Future[str], attempt_no: int
) -> str:
    # The watch's copy saves a read; a stale one only makes the first status write retry.
    obj = inflight.latest(ref)
    if obj is None and ref.spec is not None:
        obj = None if inflight.deleted(ref.uid) else _from_entry(ref)
    elif obj is None:
        obj = await deps.kube.find(LLMJOBS, ref.namespace, ref.name)
    # The same test the watch applies while the job runs: deleted, edited, suspended, ended.
    reason = stop_reason(ref, obj)
    if reason is not None:
        return "already-finished" if reason == "ended-elsewhere" else reason
    if obj is None:  # stop_reason says "deleted" for a missing job: cannot be
        return "deleted"
    job = LLMJob.model_validate(obj)
    meta = {"name": ref.name, "namespace": ref.namespace, "uid": ref.uid}
    # Recording the start (status, then an Event) runs beside the provider call, not
    # before it: it is bookkeeping, and the caller is waiting for the answer. The call
    # is created first so that its request is sent first.
    attempt = asyncio.create_task(_attempt(deps, job))
    started = StartRecord(deps, ref, obj, meta, attempt_no)
    either: list[asyncio.Future[Any]] = [attempt, stop]
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # handed back: the call and its bookkeeping stop too
        attempt.cancel()
        started.task.cancel()
        raise
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
        await started.settle()
        return f"cancelled-{stop.result()}"
    outcome, usage, used = attempt.result()
    stored, nbytes = await results.store(
        deps.redis, ref.uid, ref.generation, outcome, deps.settings.result_ttl_seconds
    )
    if job.spec.stream:
        await streams.finish(deps.redis, key, stored.error.model_dump() if stored.error else None)
    running = await started.settle()
    finished = jobstatus.mark_finished(ref, stored, nbytes, usage, used, (attempt_no, started.at))
    # Saves a read; a newer object makes the write retry from a fresh one.
    await write_status(deps, ref, running or obj, finished)
    if stored.ok and origin.routine_events(obj["metadata"]):
        tokens_used = usage.total_tokens if usage else 0
        await events.post(
            deps.kube,
            "LLMJob",
            meta,
            "Completed",
            f"result version {ref.generation} stored, {tokens_used} tokens",
            component=WORKER,
        )
    elif stored.error is not None:
        await events.post(
            deps.kube,
            "LLMJob",
            meta,
            stored.error.reason,
            stored.error.message,
            "Warning",
            WORKER,
        )
    state = "succeeded" if stored.ok else "failed"
    log.info("job %s/%s generation %d %s", ref.namespace, ref.name, ref.generation, state)
    return state


STATUS_RETRY_SECONDS = 90.0
"""How long a status write is tried again while the API server is away (restarting,
overloaded): the result is stored already, and the job's lease is kept meanwhile, so
the job is not run again for want of one write."""
PASSING_CODES = frozenset({429, 500, 502, 503, 504})


def passing(exc: Exception) -> bool:
    """Whether a failed request to the API server may succeed if tried again."""
    if isinstance(exc, KubeError):
        return exc.code in PASSING_CODES
    return isinstance(exc, aiohttp.ClientError | OSError | TimeoutError)


async def write_status(
    deps: Deps, ref: JobRef, current: Obj, mutate: Callable[[dict[str, Any]], None]
) -> Obj | None:
    """Apply a status mutation to the job version (``_write_once``), tried again with
    backoff for ``STATUS_RETRY_SECONDS`` while the API server is away.

    Returns:
        The job as written; None when it is gone, recreated or edited.
    """
    deadline = time.monotonic() + STATUS_RETRY_SECONDS
    delay = 0.5
    while True:
        try:
            return await _write_once(deps, ref, current, mutate)
        except Exception as exc:
            if not passing(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("status of %s/%s not written (%s); again", ref.namespace, ref.name, exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def _write_once(
    deps: Deps, ref: JobRef, current: Obj, mutate: Callable[[dict[str, Any]], None]
) -> Obj | None:
    """Apply a status mutation to the job version: a request's job has its whole status
    written in one request (the worker is its one writer); any other, read-modify-write
    from ``current`` with its resourceVersion (the operator writes too)."""
    if origin.is_request(current.get("metadata") or {}):
        status = copy.deepcopy(current.get("status") or {})
        mutate(status)
        return await deps.kube.set_status(LLMJOBS, ref.namespace, ref.name, ref.uid, status)
    return await deps.kube.update_status(
        LLMJOBS,
        ref.namespace,
        ref.name,
        mutate,
        uid=ref.uid,
        generation=ref.generation,
        current=current,
    )


class StartRecord:
    """Marks an attempt Running in the job's status, and posts a Started Event from the
    second attempt on: a later attempt at once (a retry is worth seeing), a first one
    once it has run ``running_status_after_seconds`` (most jobs end sooner, and then
    their final status write says it all)."""

    def __init__(self, deps: Deps, ref: JobRef, obj: Obj, meta: dict[str, str], attempt: int):
        self.deps, self.ref, self.obj, self.meta, self.attempt = deps, ref, obj, meta, attempt
        self.at = timestamps.now()
        """When the attempt started, as the status writes it."""
        self.writing = False
        self.task = asyncio.create_task(self._record())

    async def _record(self) -> Obj | None:
        if self.attempt == 1:
            await asyncio.sleep(self.deps.settings.running_status_after_seconds)
        self.writing = True
        return await self._write()

    async def _write(self) -> Obj | None:
        """Mark the version running, from the object read at the start (one write).

        Returns:
            The job as written, which the final status write starts from.
        """
        running = await write_status(
            self.deps, self.ref, self.obj, jobstatus.mark_running(self.attempt, self.at)
        )
        if running is None or self.attempt == 1:
            return running  # gone or edited (the watch stops the attempt), or a first start
        await events.post(
            self.deps.kube,
            "LLMJob",
            self.meta,
            "Started",
            f"attempt {self.attempt} on flavor {self.obj['spec']['flavor']}",
            component=WORKER,
        )
        return running

    async def settle(self) -> Obj | None:
        """The attempt ended: drop a write not yet begun, or wait for the one begun
        ("Running" must not land after "Succeeded").

        Returns:
            The job as the Running write left it; None if there was none (or it failed).
        """
        if not self.writing:
            self.task.cancel()
        try:
            return await self.task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the job itself is being cancelled, not only the write
            return None
        except Exception as exc:
            log.warning("could not record the start of a job: %s", exc)
            return None
