"""Running batches: an LLMBatch's prepared lines as work items on the queues, then its
files.

No line of a batch is an LLMJob: the LLMBatch is the resource, and its lines
travel through the queues and the results as work items (``llmloom.batches``),
so a batch of 50,000 requests costs the API server a handful of status writes,
not 50,000 objects. ``BatchController`` is a plain loop (no kopf timers: see
the design notes), woken by watch events of batches and every resync period
(a second). Each pass over an unfinished batch:

1. a new batch (no state yet: OpenAI's validating) starts: in_progress with
   its request count, or failed with the errors the API found in its input;
2. the window (lines queued and not ended) is looked at: a line whose worker
   died is queued again, up to the attempts allowed (then it fails with
   WorkerLost);
3. more lines are queued, up to ``batch_max_active_jobs`` in flight, on their
   flavors' low bands; lines refused before they ran (an unknown model, an
   invalid body) are recorded as errors at once;
4. the status takes the counts, when they changed: at most one write a pass;
5. once every line ended, or the batch is cancelled or its completion window
   has run out (the lines in flight are stopped through Redis, the queued
   ones taken off their queues), the output and error files are written and
   the batch ends: completed, cancelled or expired.

Progress lives in Redis: every step is idempotent, so a pass cut short by a
crash is simply made again. ``window`` decides from plain data; the controller
does the I/O.
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

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from rq.job import Job

from llmloom import (
    OPERATOR,
    batches,
    batchlines,
    conditions,
    events,
    files,
    queues,
    timestamps,
)
from llmloom.batches import LineError
from llmloom.kube import LLMBATCHES, Kube
from llmloom.operator import recovery
from llmloom.operator.workqueue import WorkQueue
from llmloom.resources import Flavor, LLMBatch, RequestCounts, Usage
from llmloom.settings import OperatorSettings
from llmloom.sharing import Catalog

log = logging.getLogger(__name__)
QUEUE_CHUNK = 100
"""Lines read from Redis and queued at once."""
UNKNOWN_FLAVOR_TIMEOUT = 3600
"""RQ's limit for one attempt of a line whose flavor is gone (the worker fails it)."""

Ending = Literal["completed", "cancelled", "expired"]


def stopping(cancel: bool, expires: float | None, now: float) -> Ending | None:
    """Why the batch stops before all its requests ran, if it does."""
    if cancel:
        return "cancelled"
    if expires is not None and now >= expires:
        return "expired"
    return None


@dataclass(frozen=True)
class Window:
    """Where a running batch stands: the lines queued and not ended, and what to queue."""

    low: int
    """Every line below ended."""
    in_flight: list[int]
    """Lines queued that have not ended."""
    room: int
    """Lines that may be queued now."""
    done: bool
    """Every line ended: the batch completes."""


def window(low: int, next_line: int, ended: set[int], total: int, limit: int) -> Window:
    """The window of a running batch, from its positions and the lines that ended."""
    in_flight = [i for i in range(low, next_line) if i not in ended]
    new_low = in_flight[0] if in_flight else next_line
    room = min(max(0, total - next_line), max(0, limit - len(in_flight)))
    return Window(new_low, in_flight, room, done=next_line >= total and not in_flight)


def lost_line(attempts: int) -> LineError:
    return LineError(
        status_code=500,
        message=f"the worker running this request was lost {attempts} times; giving up",
        type="server_error",
        code="WorkerLost",
    )


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


def mark_failed(
    errors: list[dict[str, Any]], message: str, reason: str = "ValidationFailed"
) -> Callable[[dict[str, Any]], None]:
    """The batch fails: its input was refused (nothing ran), or lost (``reason``)."""

    def apply(status: dict[str, Any]) -> None:
        if status.get("state") in batches.TERMINAL:
            return
        status["state"] = "failed"
        status["failedAt"] = timestamps.now()
        status["errors"] = errors
        status["message"] = message[:1024]
        status["conditions"] = conditions.set_condition(
            status.get("conditions", []), conditions.SUCCEEDED, "False", reason, message
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
        self,
        settings: OperatorSettings,
        kube: Kube,
        redis: AsyncRedis,
        sync_redis: Redis,
        catalog: Catalog,
        concurrency: int = 4,
    ) -> None:
        self.settings, self.kube, self.redis = settings, kube, redis
        self.sync_redis = sync_redis
        """RQ's client: queueing lines, and reading their queue entries."""
        self.catalog = catalog
        """The operator's watch caches of flavors (a line's flavor: its queue and time
        limit)."""
        self.known: dict[tuple[str, str], dict[str, Any]] = {}
        """Batches seen and not finished, as the watch last saw them."""
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
            # Its working state in Redis goes here; lines still queued find nothing to run.
            uid = meta["uid"]
            task = asyncio.create_task(self._forget(key[0], key[1], uid))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)
            return
        if (body.get("status") or {}).get("state") in batches.TERMINAL:
            self.known.pop(key, None)
            return
        before = self.known.get(key)
        self.known[key] = dict(body)
        # A status the controller wrote itself comes back as an event: only a new batch,
        # a changed spec (cancel) or a deletion starts a pass at once; progress waits
        # for the resync, so the status is written at most about once a period.
        if (
            before is None
            or before["metadata"].get("generation") != meta.get("generation")
            or meta.get("deletionTimestamp")
        ):
            self.poke(*key)

    async def _forget(self, namespace: str, name: str, uid: str) -> None:
        await batches.announce_cancel(self.redis, uid)
        await batches.forget(self.redis, namespace, name, uid)

    async def run(self) -> None:
        """Until cancelled: poked batches at once, every unfinished one each resync period
        (once the flavors are known, so that no line runs with an unknown flavor's limit)."""
        await self.catalog.wait_synced()
        await self.queue.run()

    async def _known(self) -> set[tuple[str, str]]:
        return set(self.known)

    async def _handle(self, key: tuple[str, str]) -> None:
        await self._one(*key)

    async def _one(self, namespace: str, name: str) -> None:
        async with self._limit:
            body = self.known.get((namespace, name))
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            try:
                await self.reconcile(LLMBatch.model_validate(body))
            except Exception:
                self.errors += 1
                log.exception("batch %s/%s: pass failed", namespace, name)

    async def _status(self, batch: LLMBatch, mutate: Callable[[dict[str, Any]], None]) -> None:
        meta = batch.metadata
        current = self.known.get((meta.namespace, meta.name))
        written = await self.kube.update_status(
            LLMBATCHES,
            meta.namespace,
            meta.name,
            mutate,
            uid=meta.uid,
            current=current if current and current["metadata"].get("uid") == meta.uid else None,
        )
        if written is not None and (meta.namespace, meta.name) in self.known:
            self.known[(meta.namespace, meta.name)] = written

    async def _event(self, batch: LLMBatch, reason: str, message: str, warning: bool) -> None:
        meta = {
            "name": batch.metadata.name,
            "namespace": batch.metadata.namespace,
            "uid": batch.metadata.uid,
        }
        kind: events.EventType = "Warning" if warning else "Normal"
        await events.post(self.kube, "LLMBatch", meta, reason, message, kind, OPERATOR)

    def _ref(self, batch: LLMBatch, index: int) -> queues.JobRef:
        meta = batch.metadata
        return queues.JobRef(
            namespace=meta.namespace, name=meta.name, uid=meta.uid, generation=1, line=index
        )

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
            window_seconds = batches.COMPLETION_WINDOWS[batch.spec.completion_window]
            expires = created + timedelta(seconds=window_seconds)
            await self._status(batch, mark_started(header.total, expires))
            await self._event(batch, "Started", f"running {header.total} requests", False)
            batch.status.expires_at = expires
            state = "in_progress"
        if header is None:
            # In progress, yet its requests are gone (Redis lost them): nothing can run,
            # and the client must see why, not a batch "completed" with no output.
            await self._input_lost(batch)
            return
        total = header.total
        expires_at = batch.status.expires_at.timestamp() if batch.status.expires_at else None
        stop = stopping(batch.spec.cancel, expires_at, time.time())
        prog = await batches.progress(self.redis, uid, total)
        if stop is not None:
            await self._stop(batch, stop, prog, state)
            return
        queued = range(prog.low, prog.next)
        ended = await batches.recorded(self.redis, uid, list(queued))
        await self._tidy(batch, [i for i in queued if i in ended])
        win = window(prog.low, prog.next, ended, total, self.settings.batch_max_active_jobs)
        await self._recover(batch, win.in_flight, header)
        position = prog.next
        if win.room:
            position = await self._queue(batch, prog.next, win.room, header)
        await batches.advance(self.redis, uid, self.ttl, next=position, low=win.low)
        if win.done:
            await self._finish(batch, "completed", total)
            return
        now = await batches.progress(self.redis, uid, total)
        if now.counts != batch.status.request_counts or state != "in_progress":
            await self._status(batch, mark_progress("in_progress", now.counts, now.usage))

    async def _tidy(self, batch: LLMBatch, ended: list[int]) -> None:
        """The queue bookkeeping of lines that ended goes (their records stay)."""
        keys = []
        for index in ended:
            ref = self._ref(batch, index)
            keys += [queues.marker_key(ref), queues.attempts_key(ref.rq_id)]
        if keys:
            await self.redis.delete(*keys)

    async def _recover(
        self, batch: LLMBatch, in_flight: list[int], header: batches.PreparedHeader
    ) -> None:
        """Lines whose worker died are queued again; past the attempts allowed, they fail."""
        refs = {i: self._ref(batch, i) for i in in_flight}
        state = await asyncio.to_thread(recovery.read, self.sync_redis, list(refs.values()))
        now = time.time()
        lost = [
            (i, ref, state[ref.rq_id].attempts)
            for i, ref in refs.items()
            if recovery.attempt_dead(state[ref.rq_id], now)
        ]
        for index, ref, attempts in lost:
            request = await batches.load_line(self.redis, ref.namespace, ref.name, index)
            if request is None:
                continue
            if attempts >= self.settings.max_attempts:
                failed = request.model_copy(update={"error": lost_line(attempts)})
                line = batchlines.error_line(batch.metadata.uid, failed)
                flavors_used = (request.flavor or "", request.flavor or "")
                await batches.record(
                    self.redis, batch.metadata.uid, index, line, self.ttl, header, flavors_used
                )
                continue
            flavor = self._flavor(batch, request.flavor or "")
            log.warning("re-queued line %d of batch %s: its worker was lost", index, ref.name)
            await asyncio.to_thread(self._requeue, ref, request.flavor or "", flavor)

    def _requeue(self, ref: queues.JobRef, flavor_name: str, flavor: Flavor | None) -> None:
        with contextlib.suppress(Exception):
            Job.fetch(ref.rq_id, connection=self.sync_redis).delete(remove_from_queue=True)
        self.sync_redis.delete(queues.marker_key(ref))
        queues.enqueue_many(self.sync_redis, [self._work(ref, flavor_name, flavor)])

    @staticmethod
    def _work(ref: queues.JobRef, flavor_name: str, flavor: Flavor | None) -> queues.Work:
        timeout = queues.job_timeout(flavor) if flavor else UNKNOWN_FLAVOR_TIMEOUT
        shared = flavor is not None and flavor.shared
        return queues.Work(ref, flavor_name, batches.PRIORITY, timeout, shared)

    def _flavor(self, batch: LLMBatch, name: str) -> Flavor | None:
        """A line's flavor, for its attempt's time limit: from the watch cache."""
        return self.catalog.named(batch.metadata.namespace, name)

    async def _queue(
        self, batch: LLMBatch, position: int, room: int, header: batches.PreparedHeader
    ) -> int:
        """Queue up to ``room`` lines from ``position`` on (lines refused before they ran are
        recorded on the way).

        Returns:
            The position after the last line handled.
        """
        ns, name, uid = batch.metadata.namespace, batch.metadata.name, batch.metadata.uid
        handled = 0
        while handled < room:
            chunk = await batches.load_prepared(
                self.redis, ns, name, position, min(QUEUE_CHUNK, room - handled)
            )
            if not chunk:
                break
            work: list[queues.Work] = []
            for offset, request in enumerate(chunk):
                index = position + offset
                if request.body is None or request.flavor is None:
                    # Refused before it ran: it counts nowhere in usage, as the API counts
                    # no request it refuses.
                    line = batchlines.error_line(uid, request)
                    await batches.record(self.redis, uid, index, line, self.ttl)
                    continue
                flavor = self._flavor(batch, request.flavor)
                work.append(self._work(self._ref(batch, index), request.flavor, flavor))
            await asyncio.to_thread(queues.enqueue_many, self.sync_redis, work)
            handled += len(chunk)
            position += len(chunk)
            await batches.advance(self.redis, uid, self.ttl, next=position)
        return position

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

    async def _input_lost(self, batch: LLMBatch) -> None:
        counts = batch.status.request_counts
        done = f"{counts.completed + counts.failed} of {counts.total}" if counts else "some"
        message = (
            "the batch's stored requests were lost (Redis lost its data): "
            f"{done} requests had ended; create the batch again"
        )
        errors = [{"code": "input_lost", "message": message}]
        await self._status(batch, mark_failed(errors, message, "InputLost"))
        await self._event(batch, "InputLost", message, True)
        ns, name = batch.metadata.namespace, batch.metadata.name
        await batches.forget(self.redis, ns, name, batch.metadata.uid)

    async def _stop(
        self, batch: LLMBatch, stop: Ending, prog: batches.Progress, state: str | None
    ) -> None:
        """Cancelled or expired: its lines in flight stop, the queued ones leave their
        queues, and the batch ends with what had finished."""
        uid = batch.metadata.uid
        if stop == "cancelled" and state != "cancelling":
            await self._status(batch, mark_progress("cancelling", prog.counts, prog.usage))
        await batches.announce_cancel(self.redis, uid)
        refs = [self._ref(batch, i) for i in range(prog.low, prog.next)]

        def dequeue() -> None:
            for ref in refs:
                with contextlib.suppress(Exception):
                    Job.fetch(ref.rq_id, connection=self.sync_redis).delete(remove_from_queue=True)
            keys = [k for r in refs for k in (queues.marker_key(r), queues.attempts_key(r.rq_id))]
            if keys:
                self.sync_redis.delete(*keys)

        await asyncio.to_thread(dequeue)
        await self._finish(batch, stop, prog.counts.total)

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
                    line = batchlines.unexecuted_line(uid, request, ending)
                    ended[index] = (False, line.text)
        ok = [text for _, (good, text) in sorted(ended.items()) if good]
        bad = [text for _, (good, text) in sorted(ended.items()) if not good]
        bid = batches.batch_id(name)
        output = error = None
        if ok:
            output = await files.create(
                self.redis,
                ns,
                batchlines.jsonl(ok),
                f"{bid}_output.jsonl",
                "batch_output",
                self.ttl,
                file_id=batches.output_file_id(uid, "output"),
            )
        if bad:
            error = await files.create(
                self.redis,
                ns,
                batchlines.jsonl(bad),
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
