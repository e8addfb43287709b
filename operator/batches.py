"""Running batches: an LLMBatch's prepared requests as LLMJobs, then its files.

``BatchController`` is a plain loop (no kopf timers: see the design notes),
woken by watch events of batches and of their jobs, and every resync period.
Each pass over an unfinished batch:

1. a new batch (no state yet: OpenAI's validating) starts: in_progress with
   its request count, or failed with the errors the API found in its input;
2. its jobs that ended are recorded (their line of the output or error file,
   kept in Redis) and deleted, so that etcd holds only the jobs in flight;
3. more prepared requests become jobs, up to ``batch_max_active_jobs``
   unfinished ones at a time; requests refused before they ran (an unknown
   model, an invalid body) are recorded as errors at once;
4. once every request ended, or the batch is cancelled or its completion
   window has run out (jobs still in flight are deleted, which stops their
   provider calls), the output and error files are written and the batch
   ends: completed, cancelled or expired.

Progress lives in Redis (``llmloom.batches``): every step is idempotent, so a
pass cut short by a crash is simply made again.
``plan`` decides from plain data; the controller does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from redis.asyncio import Redis as AsyncRedis

from llmloom import API_VERSION, OPERATOR, batches, conditions, events, files, results, timestamps
from llmloom.batches import LineError, Prepared
from llmloom.kube import LLMBATCHES, LLMJOBS, Kube, KubeError, Obj
from llmloom.operator import batchoutput
from llmloom.operator.workqueue import WorkQueue
from llmloom.resources import LLMBatch, RequestCounts, Usage
from llmloom.settings import OperatorSettings

log = logging.getLogger(__name__)
REQUEST_ANNOTATION = "llmloom.io/batch-request"
"""Annotation of a batch's job: the position of its request among the batch's requests."""
CREATE_CHUNK = 50
"""Jobs created at once (concurrent requests to the API server)."""

Ending = Literal["completed", "cancelled", "expired"]


@dataclass(frozen=True)
class Child:
    """What the controller needs to know of one of a batch's jobs."""

    name: str
    uid: str
    generation: int
    index: int
    """Position of the job's request among the batch's requests."""
    finished: bool
    failed_reason: str = ""
    failed_message: str = ""


def child_of(body: Mapping[str, Any]) -> Child | None:
    """The summary of a batch's job, or None for a job without its request annotation."""
    meta, status = body["metadata"], body.get("status") or {}
    raw = (meta.get("annotations") or {}).get(REQUEST_ANNOTATION, "")
    if not raw.isdigit():
        return None
    gen = int(meta.get("generation") or 1)
    conds = status.get("conditions", [])
    failed = conditions.find(conds, conditions.FAILED) or {}
    return Child(
        name=meta["name"],
        uid=meta["uid"],
        generation=gen,
        index=int(raw),
        finished=conditions.finished(conds, gen),
        failed_reason=str(failed.get("reason", "")),
        failed_message=str(failed.get("message", "")),
    )


def build_job(batch: LLMBatch, index: int, request: Prepared) -> Obj:
    """The LLMJob that runs one prepared request: owned by the batch (deleting the batch
    deletes its jobs), labelled with its name, annotated with the request's position."""
    name = batch.metadata.name
    return {
        "apiVersion": API_VERSION,
        "kind": "LLMJob",
        "metadata": {
            "name": batches.job_name(name, index),
            "labels": {batches.BATCH_LABEL: name},
            "annotations": {
                REQUEST_ANNOTATION: str(index),
                batches.LINE_ANNOTATION: str(request.line),
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "LLMBatch",
                    "name": name,
                    "uid": batch.metadata.uid,
                    "controller": True,
                }
            ],
        },
        "spec": request.spec,
    }


def fallback_error(child: Child) -> LineError:
    """The error of a job that ended without a stored outcome (the operator refused it)."""
    reason = child.failed_reason or "JobFailed"
    missing = reason == "FlavorNotFound"
    return LineError(
        status_code=404 if missing else 500,
        message=child.failed_message or "the job failed",
        type="invalid_request_error" if missing else "server_error",
        code=reason,
    )


@dataclass(frozen=True)
class Plan:
    """What one pass does to a batch that runs."""

    collect: list[Child]
    """Jobs that ended: record, then delete."""
    stop: list[Child]
    """Jobs in flight to delete (the batch is cancelled or expired)."""
    room: int
    """Prepared requests that may start now."""
    ending: Ending | None
    """Set when the batch ends in this pass (before any new request starts)."""


def stopping(cancel: bool, expires: float | None, now: float) -> Ending | None:
    """Why the batch stops before all its requests ran, if it does."""
    if cancel:
        return "cancelled"
    if expires is not None and now >= expires:
        return "expired"
    return None


def plan(
    children: list[Child],
    next_position: int,
    total: int,
    window: int,
    stop: Ending | None,
) -> Plan:
    """The pass over a running batch, from its jobs and its progress."""
    ended = [c for c in children if c.finished]
    running = [c for c in children if not c.finished]
    if stop is not None:
        return Plan(collect=ended, stop=running, room=0, ending=stop)
    remaining = max(0, total - next_position)
    room = min(remaining, max(0, window - len(running)))
    ending: Ending | None = "completed" if remaining == 0 and not running else None
    return Plan(collect=ended, stop=[], room=room, ending=ending)


# --------------------------------------------------------------------------- status


def mark_started(total: int, expires: datetime) -> Callable[[dict[str, Any]], None]:
    """The batch's input was found good: its requests start."""

    def apply(status: dict[str, Any]) -> None:
        if status.get("state") not in (None, "validating"):
            return
        status["state"] = "in_progress"
        status["inProgressAt"] = timestamps.now()
        status["expiresAt"] = timestamps.format(expires)
        status["requestCounts"] = RequestCounts(total=total).wire()
        status["message"] = f"running {total} requests"

    return apply


def mark_failed(errors: list[dict[str, Any]], message: str) -> Callable[[dict[str, Any]], None]:
    """The batch's input was refused: the batch fails without running anything."""

    def apply(status: dict[str, Any]) -> None:
        if status.get("state") in batches.TERMINAL:
            return
        status["state"] = "failed"
        status["failedAt"] = timestamps.now()
        status["errors"] = errors
        status["message"] = message[:1024]
        status["conditions"] = conditions.set_condition(
            status.get("conditions", []), conditions.SUCCEEDED, "False", "ValidationFailed", message
        )

    return apply


def mark_progress(
    state: str, counts: RequestCounts, usage: Usage
) -> Callable[[dict[str, Any]], None]:
    """Counts as they stand, and the cancellation's start (state cancelling)."""

    def apply(status: dict[str, Any]) -> None:
        if status.get("state") in batches.TERMINAL:
            return
        if state == "cancelling" and status.get("state") != "cancelling":
            status["cancellingAt"] = timestamps.now()
            status["message"] = "cancelling: stopping the requests in flight"
        elif state == "finalizing" and status.get("state") != "finalizing":
            status["finalizingAt"] = timestamps.now()
            status["message"] = "writing the output and error files"
        elif state == "in_progress":
            status["message"] = (
                f"{counts.completed + counts.failed} of {counts.total} requests ended"
            )
        status["state"] = state
        status["requestCounts"] = counts.wire()
        status["usage"] = usage.wire()

    return apply


ENDED_AT = {"completed": "completedAt", "cancelled": "cancelledAt", "expired": "expiredAt"}


def mark_ended(
    ending: Ending,
    counts: RequestCounts,
    usage: Usage,
    output_file: str | None,
    error_file: str | None,
) -> Callable[[dict[str, Any]], None]:
    """The batch ended: its files, final counts and the Succeeded condition."""
    message = f"{ending}: {counts.completed} requests succeeded, {counts.failed} failed" + (
        " or did not run" if ending != "completed" else ""
    )

    def apply(status: dict[str, Any]) -> None:
        if status.get("state") in batches.TERMINAL:
            return
        status["state"] = ending
        status[ENDED_AT[ending]] = timestamps.now()
        status["requestCounts"] = counts.wire()
        status["usage"] = usage.wire()
        for key, value in (("outputFileId", output_file), ("errorFileId", error_file)):
            if value is not None:
                status[key] = value
        status["message"] = message
        ok = ending == "completed"
        status["conditions"] = conditions.set_condition(
            status.get("conditions", []),
            conditions.SUCCEEDED,
            "True" if ok else "False",
            {"completed": "Completed", "cancelled": "Cancelled", "expired": "Expired"}[ending],
            message,
        )

    return apply


# --------------------------------------------------------------------------- controller


class BatchController:
    """Runs every unfinished batch: poked by watch events, and every resync period."""

    def __init__(
        self, settings: OperatorSettings, kube: Kube, redis: AsyncRedis, concurrency: int = 4
    ) -> None:
        self.settings, self.kube, self.redis = settings, kube, redis
        self.known: dict[tuple[str, str], str] = {}
        """Batches seen and not finished: (namespace, name) -> uid."""
        self._limit = asyncio.Semaphore(concurrency)
        self.queue: WorkQueue[tuple[str, str]] = WorkQueue(
            settings.batch_resync_seconds, self._known, self._handle
        )
        self._cleanups: set[asyncio.Task[None]] = set()
        self.errors = 0
        """Passes that failed, since start."""

    @property
    def ttl(self) -> int:
        return self.settings.file_ttl_seconds

    def poke(self, namespace: str, name: str) -> None:
        """Look at this batch soon."""
        self.queue.poke((namespace, name))

    def observe(self, event: str | None, body: Mapping[str, Any]) -> None:
        """Take in one watch event of a batch."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if event == "DELETED":
            self.known.pop(key, None)
            # Its jobs go with it (ownerReferences); its working state in Redis goes here.
            task = asyncio.create_task(batches.forget(self.redis, *key, meta["uid"]))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)
            return
        if (body.get("status") or {}).get("state") in batches.TERMINAL:
            self.known.pop(key, None)
            return
        self.known[key] = meta["uid"]
        self.poke(*key)

    def observe_job(self, body: Mapping[str, Any]) -> None:
        """A batch's job changed (it ended, or went): look at its batch."""
        meta = body["metadata"]
        name = (meta.get("labels") or {}).get(batches.BATCH_LABEL)
        if name:
            self.poke(meta["namespace"], name)

    async def run(self) -> None:
        """Until cancelled: poked batches at once, every unfinished one each resync period."""
        await self.queue.run()

    async def _known(self) -> set[tuple[str, str]]:
        return set(self.known)

    async def _handle(self, key: tuple[str, str]) -> None:
        await self._one(*key)

    async def _one(self, namespace: str, name: str) -> None:
        async with self._limit:
            try:
                obj = await self.kube.find(LLMBATCHES, namespace, name)
                if obj is None or obj["metadata"].get("deletionTimestamp"):
                    return
                await self.reconcile(LLMBatch.model_validate(obj))
            except Exception:
                self.errors += 1
                log.exception("batch %s/%s: pass failed", namespace, name)

    async def _status(self, batch: LLMBatch, mutate: Callable[[dict[str, Any]], None]) -> None:
        await self.kube.update_status(
            LLMBATCHES,
            batch.metadata.namespace,
            batch.metadata.name,
            mutate,
            uid=batch.metadata.uid,
        )

    async def _event(self, batch: LLMBatch, reason: str, message: str, warning: bool) -> None:
        meta = {
            "name": batch.metadata.name,
            "namespace": batch.metadata.namespace,
            "uid": batch.metadata.uid,
        }
        kind: events.EventType = "Warning" if warning else "Normal"
        await events.post(self.kube, "LLMBatch", meta, reason, message, kind, OPERATOR)

    async def reconcile(self, batch: LLMBatch) -> None:
        """One pass over one batch."""
        ns, name, uid = batch.metadata.namespace, batch.metadata.name, batch.metadata.uid
        state = batch.status.state
        if state in batches.TERMINAL:
            return
        header = await batches.load_header(self.redis, ns, name)
        if state in (None, "validating"):
            if header is None or header.errors:
                await self._refuse(batch, header)
                return
            created = batch.metadata.creation_timestamp or datetime.now(UTC)
            window = batches.COMPLETION_WINDOWS[batch.spec.completion_window]
            await self._status(
                batch, mark_started(header.total, created + timedelta(seconds=window))
            )
            await self._event(batch, "Started", f"running {header.total} requests", False)
            batch.status.expires_at = created + timedelta(seconds=window)
        if header is None:
            # In progress, yet its requests are gone (Redis lost them): nothing can run.
            header = batches.PreparedHeader(total=0)
        total = header.total
        expires = batch.status.expires_at.timestamp() if batch.status.expires_at else None
        stop = stopping(batch.spec.cancel, expires, time.time())
        if stop == "cancelled" and state != "cancelling":
            prog = await batches.progress(self.redis, uid, total)
            await self._status(batch, mark_progress("cancelling", prog.counts, prog.usage))
        children = [
            c
            for c in map(
                child_of,
                await self.kube.list(LLMJOBS, ns, label_selector=f"{batches.BATCH_LABEL}={name}"),
            )
            if c is not None
        ]
        prog = await batches.progress(self.redis, uid, total)
        step = plan(children, prog.next, total, self.settings.batch_max_active_jobs, stop)
        await self._collect(batch, step.collect, header)
        for child in step.stop:
            with contextlib.suppress(KubeError):
                await self.kube.delete(LLMJOBS, ns, child.name)
        ending = step.ending
        if ending is None and step.room:
            started, position = await self._start(batch, prog.next, step.room)
            running = len(children) - len(step.collect) + started
            if position >= total and running == 0:
                ending = "completed"
        if ending is not None:
            await self._finish(batch, ending, total)
            return
        prog = await batches.progress(self.redis, uid, total)
        current = "cancelling" if stop == "cancelled" else "in_progress"
        await self._status(batch, mark_progress(current, prog.counts, prog.usage))

    async def _refuse(self, batch: LLMBatch, header: batches.PreparedHeader | None) -> None:
        if header is None:
            errors = [
                {
                    "code": "input_unavailable",
                    "message": "The batch's requests were not prepared: batches are created "
                    "with POST /v1/batches, which reads the input file.",
                }
            ]
        else:
            errors = [e.wire() for e in header.errors]
        message = f"the input file was refused: {errors[0]['message']}"
        await self._status(batch, mark_failed(errors, message))
        await self._event(batch, "ValidationFailed", message, True)
        ns, name = batch.metadata.namespace, batch.metadata.name
        await batches.forget(self.redis, ns, name, batch.metadata.uid)

    async def _collect(
        self, batch: LLMBatch, ended: list[Child], header: batches.PreparedHeader
    ) -> None:
        """Record the jobs that ended (their lines, counted in the tenant's usage), then
        delete them."""
        if not ended:
            return
        ns, uid = batch.metadata.namespace, batch.metadata.uid
        for child in ended:
            found = await batches.load_prepared(self.redis, ns, batch.metadata.name, child.index, 1)
            if found:
                outcome = await results.load(self.redis, child.uid, child.generation)
                line = batchoutput.response_line(
                    found[0], child.name, child.uid, outcome, fallback_error(child)
                )
                asked = str((found[0].spec or {}).get("flavor", ""))
                answered = (outcome.flavor if outcome else None) or asked
                await batches.record(
                    self.redis, uid, child.index, line, self.ttl, header, (asked, answered)
                )
            with contextlib.suppress(KubeError):
                await self.kube.delete(LLMJOBS, ns, child.name)

    async def _start(self, batch: LLMBatch, position: int, room: int) -> tuple[int, int]:
        """Start up to ``room`` jobs from ``position`` on (requests refused before they ran
        are recorded on the way).

        Returns:
            How many jobs were started, and the position after the last request handled.
        """
        ns, name, uid = batch.metadata.namespace, batch.metadata.name, batch.metadata.uid
        started = 0
        while started < room:
            chunk = await batches.load_prepared(
                self.redis, ns, name, position, min(CREATE_CHUNK, room - started)
            )
            if not chunk:
                break
            indexes = list(range(position, position + len(chunk)))
            done = await batches.recorded(self.redis, uid, indexes)
            creates = []
            for index, request in zip(indexes, chunk, strict=True):
                if index in done:
                    continue  # ended in an earlier pass cut short before it moved on
                if request.spec is None:
                    await batches.record(
                        self.redis, uid, index, batchoutput.error_line(uid, request), self.ttl
                    )
                else:
                    creates.append((index, request))
            replies = await asyncio.gather(
                *(self.kube.create(LLMJOBS, ns, build_job(batch, i, r)) for i, r in creates),
                return_exceptions=True,
            )
            for (index, request), reply in zip(creates, replies, strict=True):
                if not isinstance(reply, BaseException):
                    continue
                if isinstance(reply, KubeError) and reply.code == 409:
                    continue  # created in a pass cut short
                if isinstance(reply, KubeError) and reply.code in (400, 422):
                    # The API server refuses what the API's checks let through: that
                    # request fails, the rest go on.
                    refused = request.model_copy(
                        update={
                            "error": LineError(
                                status_code=400, message=reply.message, code="invalid_request"
                            )
                        }
                    )
                    await batches.record(
                        self.redis, uid, index, batchoutput.error_line(uid, refused), self.ttl
                    )
                    continue
                raise reply  # the API server is unwell: the next pass starts from here
            started += len(creates)
            position += len(chunk)
            await batches.advance(self.redis, uid, position, self.ttl)
        return started, position

    async def _finish(self, batch: LLMBatch, ending: Ending, total: int) -> None:
        """Write the output and error files and end the batch."""
        ns, name, uid = batch.metadata.namespace, batch.metadata.name, batch.metadata.uid
        prog = await batches.progress(self.redis, uid, total)
        if ending == "completed":
            await self._status(batch, mark_progress("finalizing", prog.counts, prog.usage))
        ended = await batches.ended_lines(self.redis, uid)
        if ending != "completed" and len(ended) < total:
            requests = await batches.load_prepared(self.redis, ns, name, 0, total)
            for index, request in enumerate(requests):
                if index not in ended:
                    line = batchoutput.unexecuted_line(uid, request, ending)
                    ended[index] = (False, line.text)
        ok = [text for _, (good, text) in sorted(ended.items()) if good]
        bad = [text for _, (good, text) in sorted(ended.items()) if not good]
        bid = batches.batch_id(name)
        output = error = None
        if ok:
            output = await files.create(
                self.redis,
                ns,
                batchoutput.jsonl(ok),
                f"{bid}_output.jsonl",
                "batch_output",
                self.ttl,
                file_id=batches.output_file_id(uid, "output"),
            )
        if bad:
            error = await files.create(
                self.redis,
                ns,
                batchoutput.jsonl(bad),
                f"{bid}_error.jsonl",
                "batch_output",
                self.ttl,
                file_id=batches.output_file_id(uid, "error"),
            )
        counts = RequestCounts(total=total, completed=len(ok), failed=len(bad))
        await self._status(
            batch,
            mark_ended(
                ending,
                counts,
                prog.usage,
                output.id if output else None,
                error.id if error else None,
            ),
        )
        await self._event(
            batch,
            ending.capitalize(),
            f"{counts.completed} requests succeeded, {counts.failed} failed",
            ending != "completed",
        )
        self.known.pop((ns, name), None)
        await batches.forget(self.redis, ns, name, uid)
