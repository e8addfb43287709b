"""The job controller: admission, and watching over jobs between their events.

The LLMJob resources are the source of truth and Redis only the transport.
The controller watches every LLMJob itself (a ``Reflector``: one JSON parse
and a summary per event; under kopf the operator spent five times the CPU on
the events of every request's job, measured). A job a person or ``/v1/jobs`` wrote is admitted
against its flavor and enqueued when its current spec version has not been
(``admission.needs_admission``); a request's job was enqueued by the API.
Every few seconds the controller compares the jobs it has seen with Redis: a
job whose queue entry is gone (Redis lost its data) or whose attempt died with
its worker is enqueued again; a job past its ``activeDeadlineSeconds`` fails
with ``DeadlineExceeded``; a finished job past its ``ttlSecondsAfterFinished``
is deleted, and with it its stored results. The decisions are made by
``plan`` and ``admission.admit`` from plain data; ``JobController`` does the
I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from rq.job import Job

from llmloom import (
    OPERATOR,
    bodies,
    conditions,
    events,
    jobstatus,
    origin,
    queues,
    ratelimit,
    results,
    timestamps,
)
from llmloom.events import EventType
from llmloom.informer import Reflector
from llmloom.kube import LLMJOBS, Kube, KubeError, Obj
from llmloom.operator import admission, recovery
from llmloom.operator.recovery import QueueState, attempt_dead
from llmloom.resources import LLMJob
from llmloom.settings import OperatorSettings
from llmloom.sharing import Catalog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobSummary:
    """What the controller needs to know of one job."""

    namespace: str
    name: str
    uid: str
    generation: int
    flavor: str
    priority: int
    created: float
    deadline: int | None
    ttl: int | None
    accepted: bool
    finished: bool
    completed: float | None
    attempts: int
    suspended: bool
    state: str = "Pending"
    task: str = "chat"
    spent: tuple[int, int] = (0, 0)
    """Prompt and completion tokens, as the status counts them."""
    cost_micros: int = 0
    """What they cost (the status's usage.cost), in millionths."""
    flavor_used: str | None = None
    requested: bool = False
    """Admitted by the API: it may hold an admission charge."""
    request_key: str | None = None
    """A request's job: where its stored request is (it goes with the job)."""
    spec: dict[str, Any] | None = None
    """A request's job: its (small) spec, for its queue entry when it must be enqueued
    again."""

    @property
    def ref(self) -> queues.JobRef:
        return queues.JobRef(
            namespace=self.namespace,
            name=self.name,
            uid=self.uid,
            generation=self.generation,
            spec=self.spec,
            created=timestamps.format(datetime.fromtimestamp(self.created, UTC))
            if self.spec is not None
            else None,
        )


def summarize(body: Mapping[str, Any]) -> JobSummary:
    """The summary of a job object."""
    meta, spec, status = body["metadata"], body.get("spec", {}), body.get("status") or {}
    gen = int(meta.get("generation") or 1)
    conds = status.get("conditions", [])
    return JobSummary(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        generation=gen,
        flavor=spec.get("flavor", ""),
        priority=int(spec.get("priority") or 0),
        created=timestamps.epoch(meta.get("creationTimestamp")) or time.time(),
        deadline=spec.get("activeDeadlineSeconds"),
        ttl=spec.get("ttlSecondsAfterFinished"),
        # A request's job was admitted and enqueued by the API: no Accepted is written.
        accepted=conditions.is_true(conds, conditions.ACCEPTED, gen) or origin.is_request(meta),
        finished=conditions.finished(conds, gen),
        completed=timestamps.epoch(status.get("completionTime")),
        attempts=int(status.get("attempts") or 0),
        suspended=bool(spec.get("suspend")),
        state=status.get("state") or conditions.job_state(conds),
        task=spec.get("task") or "chat",
        spent=ratelimit.spent(status.get("usage")),
        cost_micros=ratelimit.cost_micros(status.get("usage")),
        flavor_used=status.get("flavorUsed"),
        requested=origin.admitted_by_api(meta),
        request_key=(spec.get("request") or {}).get("key"),
        spec=dict(spec) if origin.is_request(meta) else None,
    )


ENQUEUE_GRACE_SECONDS = 5.0
"""How long a new job may have no queue entry: the API queues a request's job right after
it created it, and the operator may see the job in between."""
ACTIONS_AT_ONCE = 8
"""Actions of one resync (deletions, mostly) under way at once."""
SETTLE_AFTER_SECONDS = 10.0
"""How long after a job ended the operator leaves its charge to the API's waiter."""
Kind = Literal["deadline", "expire", "requeue", "lost"]


@dataclass(frozen=True)
class Action:
    kind: Kind
    job: JobSummary
    message: str


def needs_queue_check(job: JobSummary) -> bool:
    """Whether the job should have a live queue entry."""
    return job.accepted and not job.finished and not job.suspended


def plan(
    jobs: Iterable[JobSummary], state: Mapping[str, QueueState], now: float, max_attempts: int
) -> list[Action]:
    """What to do about each job, from the jobs and what Redis holds for them."""
    actions: list[Action] = []
    for job in jobs:
        if job.finished:
            if job.ttl is not None and job.completed is not None and now >= job.completed + job.ttl:
                actions.append(Action("expire", job, f"finished more than {job.ttl}s ago"))
            continue
        if job.deadline is not None and now >= job.created + job.deadline:
            actions.append(
                Action("deadline", job, f"not finished within activeDeadlineSeconds={job.deadline}")
            )
            continue
        if not needs_queue_check(job):
            continue
        q = state.get(job.ref.rq_id, QueueState(marked=False, rq_status=None))
        if not q.marked and now - job.created < ENQUEUE_GRACE_SECONDS:
            continue  # the API creates a request's job, then queues it
        if not attempt_dead(q, now):
            continue
        tries = max(job.attempts, q.attempts)
        if tries >= max_attempts:
            actions.append(Action("lost", job, f"the worker was lost {tries} times; giving up"))
        else:
            if not q.marked or q.rq_status is None:
                why = "its queue entry is gone"
            elif q.rq_status == "started":
                why = "its worker stopped renewing its lease (worker lost)"
            else:
                why = f"its last attempt ended {q.rq_status} (worker lost)"
            actions.append(Action("requeue", job, why))
    return actions


class JobController:
    """Watches jobs, admits those that need it, and acts on ``plan`` every resync period."""

    def __init__(
        self,
        settings: OperatorSettings,
        kube: Kube,
        redis: Redis,
        aredis: AsyncRedis,
        catalog: Catalog,
    ) -> None:
        self.settings, self.kube, self.redis, self.aredis = settings, kube, redis, aredis
        self.catalog = catalog
        """Flavors, shared models and their grants, from watches (admission reads them)."""
        self.jobs: dict[str, JobSummary] = {}
        self.errors = 0
        """Actions that failed, since start."""
        self.unsettled: list[JobSummary] = []
        """Jobs that ended or went, whose admission charge may still hold an estimate."""
        self.reflector = Reflector(
            kube, LLMJOBS, self._listed, self._changed, namespace=settings.namespace
        )
        self._admitting: dict[str, Obj] = {}
        """Jobs being admitted (by uid), each with its latest body."""
        self.waiting: dict[str, Obj] = {}
        """Jobs whose flavor is not there yet (by uid): admitted again each resync."""
        self._tasks: set[asyncio.Task[None]] = set()

    def observe(self, event: str | None, body: Mapping[str, Any]) -> JobSummary | None:
        """Take in one watch event of a job.

        Returns:
            A deleted job, whose queue entries and results are to be ``forget``-ten.
        """
        uid = body["metadata"]["uid"]
        if event == "DELETED":
            return self._gone(uid, self.jobs.get(uid) or summarize(body))
        else:
            summary, before = summarize(body), self.jobs.get(uid)
            self.jobs[uid] = summary
            if (
                summary.requested
                and summary.finished
                and not (before and before.finished and before.generation == summary.generation)
            ):
                self.unsettled.append(summary)
        return None

    async def forget(self, job: JobSummary) -> None:
        """A deleted job's queue entries go with it, and so do its stored results, unless it
        was a request's (its task stays readable for the results' lifetime) whose stored
        request goes instead. An unfinished one may still be queued: it is taken off
        (through RQ's synchronous client, in a thread)."""
        keys = (
            []
            if job.request_key
            else [results.result_key(job.uid, v) for v in range(1, job.generation + 1)]
        )
        if job.request_key and job.request_key.startswith(bodies.PREFIX):
            keys.append(job.request_key)
        refs = [job.ref.model_copy(update={"generation": v}) for v in range(1, job.generation + 1)]
        for ref in refs:
            keys += [queues.marker_key(ref), queues.attempts_key(ref.rq_id)]
        try:
            if not job.finished:
                await asyncio.to_thread(self._dequeue, refs)
            await self.aredis.delete(*keys)
        except Exception:
            log.exception("cleaning up after job %s/%s failed", job.namespace, job.name)

    def _dequeue(self, refs: list[queues.JobRef]) -> None:
        for ref in refs:
            with contextlib.suppress(Exception):
                Job.fetch(ref.rq_id, connection=self.redis).delete(remove_from_queue=True)

    def queue_state(self, jobs: list[JobSummary]) -> dict[str, QueueState]:
        """What Redis holds for every job version, in one round trip."""
        return recovery.read(self.redis, [job.ref for job in jobs])

    async def run(self) -> None:
        """Watch and resync until cancelled (admitting once the flavors are known, so that
        no job is refused for a flavor not yet listed)."""
        await self.catalog.wait_synced()
        watch = asyncio.create_task(self.reflector.run(), name="llmloom-job-watch")
        try:
            while True:
                await asyncio.sleep(self.settings.job_resync_seconds)
                try:
                    await self.tick()
                except Exception:
                    log.exception("job resync failed")
        finally:
            watch.cancel()
            await asyncio.gather(watch, *self._tasks, return_exceptions=True)

    async def _listed(self, items: list[Obj]) -> None:
        """A fresh list: jobs deleted while no watch ran are forgotten now."""
        listed = {item["metadata"]["uid"] for item in items}
        for uid in [uid for uid in self.jobs if uid not in listed]:
            gone = self.jobs[uid]
            await self._changed("DELETED", {"metadata": {"uid": uid}}, gone)
        for item in items:
            await self._changed("ADDED", item)

    async def _changed(self, kind: str, body: Obj, known: JobSummary | None = None) -> None:
        """One watch event of a job."""
        uid = body["metadata"]["uid"]
        if kind == "DELETED":
            self.waiting.pop(uid, None)
            await self.forget(self._gone(uid, known or self.jobs.get(uid) or summarize(body)))
            return
        self.observe(kind, body)
        if admission.needs_admission(body):
            self._admit_soon(body)

    def _gone(self, uid: str, summary: JobSummary) -> JobSummary:
        """A job deleted: no longer watched over; a request's that had not finished was
        cancelled, and its estimate goes back."""
        self.jobs.pop(uid, None)
        if summary.requested and not summary.finished:
            self.unsettled.append(summary)
        return summary

    def _admit_soon(self, body: Obj) -> None:
        """Admit a job beside the watch (admission waits on Redis and the API server); a
        job already being admitted is admitted again with its newer body afterwards."""
        uid = body["metadata"]["uid"]
        busy = uid in self._admitting
        self._admitting[uid] = body
        if busy:
            return

        async def admit_latest() -> None:
            while True:
                latest = self._admitting[uid]
                try:
                    await self._admit(latest)
                except Exception as exc:
                    self.errors += 1
                    log.warning("admitting job %s failed: %s", uid, exc)
                    self.waiting[uid] = latest  # tried again at the next resync
                if self._admitting[uid] is latest:
                    del self._admitting[uid]
                    return

        task = asyncio.create_task(admit_latest())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _admit(self, body: Obj) -> None:
        """Decide on a job's current spec version: enqueue it, hold it (suspended, or its
        flavor not there yet), or refuse it; write the decision to its status."""
        job = LLMJob.model_validate(body)
        meta = job.metadata
        flavor = self.catalog.named(meta.namespace, job.spec.flavor)
        created = timestamps.epoch(body["metadata"].get("creationTimestamp"))
        age = 0.0 if created is None else time.time() - created
        adm = admission.admit(job, flavor, age, self.settings.flavor_grace_seconds)
        if adm.action == "skip":
            return
        gen = meta.generation
        conds = [c.wire() for c in job.status.conditions]
        already = conditions.is_true(conds, conditions.ACCEPTED, gen)
        to = flavor if adm.action == "enqueue" else None
        if to is not None and await asyncio.to_thread(queues.enqueue_job, self.redis, job, to):
            log.info(
                "%s/%s: enqueued generation %d: %s", meta.namespace, meta.name, gen, adm.message
            )
        written = await self.kube.update_status(
            LLMJOBS,
            meta.namespace,
            meta.name,
            admission.record(adm, gen),
            uid=meta.uid,
            generation=gen,
            current=body,
        )
        if adm.action == "wait":
            self.waiting[meta.uid] = body
            return
        self.waiting.pop(meta.uid, None)
        if written is None:
            return  # gone, or its spec moved on: the newer version gets its own admission
        if adm.action == "reject":
            log.warning("%s/%s: rejected: %s", meta.namespace, meta.name, adm.message)
        routine = adm.action == "enqueue" and (
            already or not origin.routine_events(body["metadata"])
        )
        if not routine:
            kind: EventType = "Warning" if adm.action == "reject" else "Normal"
            reason = "Accepted" if adm.action == "enqueue" else adm.reason
            await events.post(
                self.kube, "LLMJob", body["metadata"], reason, adm.message, kind, OPERATOR
            )

    async def settle(self, now: float) -> None:
        """Settle the admission charges the API left: a request answered 202 whose task
        nobody asked about again, or a cancelled one. The API settles a charge when it
        sees the answer; one not settled after ``SETTLE_AFTER_SECONDS`` is settled here,
        with the tokens in the job's status (none for a job deleted unfinished), or its
        estimate would hold the tenant's budget for ever. Claiming is atomic, so a
        charge is settled once."""
        waiting, self.unsettled = self.unsettled, []
        due: list[JobSummary] = []
        for job in waiting:
            ended = job.completed if job.finished else None
            if ended is not None and now - ended < SETTLE_AFTER_SECONDS:
                self.unsettled.append(job)  # the API's waiter comes first
            else:
                due.append(job)
        charges = await ratelimit.claim_many(self.aredis, [(j.uid, j.generation) for j in due])
        for job, charge in zip(due, charges, strict=True):
            if charge is not None:
                prompt, completion = job.spent if job.finished else (0, 0)
                cost = job.cost_micros if job.finished else 0
                await ratelimit.apply(
                    self.aredis, charge, prompt, completion, job.flavor_used, cost
                )

    async def tick(self) -> None:
        for body in list(self.waiting.values()):
            self._admit_soon(body)
        await self.settle(time.time())
        jobs = list(self.jobs.values())
        check = [j for j in jobs if needs_queue_check(j)]
        state = await asyncio.to_thread(self.queue_state, check) if check else {}
        # Deletions after the TTL come by the hundred under load: some at a time, not one
        # after another (each waits on the API server, which can take several at once).
        limit = asyncio.Semaphore(ACTIONS_AT_ONCE)

        async def act(action: Action) -> None:
            async with limit:
                try:
                    await self._act(action)
                except KubeError as exc:
                    if exc.code != 404:
                        self.errors += 1
                        log.warning(
                            "%s of %s/%s failed: %s",
                            action.kind,
                            action.job.namespace,
                            action.job.name,
                            exc,
                        )

        await asyncio.gather(
            *(act(a) for a in plan(jobs, state, time.time(), self.settings.max_attempts))
        )

    async def _act(self, action: Action) -> None:
        job = action.job
        if action.kind != "expire":
            meta = {"name": job.name, "namespace": job.namespace, "uid": job.uid}
            reasons = {"requeue": "Requeued", "deadline": "DeadlineExceeded", "lost": "WorkerLost"}
            await events.post(
                self.kube,
                "LLMJob",
                meta,
                reasons[action.kind],
                action.message,
                "Warning",
                OPERATOR,
            )
        if action.kind == "expire":
            # Routine (a request's job goes minutes after its answer): not worth a line each.
            log.debug("deleting %s/%s: %s", job.namespace, job.name, action.message)
            await self.kube.delete(LLMJOBS, job.namespace, job.name)
        elif action.kind == "requeue":
            await self._requeue(job, action.message)
        else:
            reason = "DeadlineExceeded" if action.kind == "deadline" else "WorkerLost"
            await self._fail(job, reason, action.message)

    async def _requeue(self, job: JobSummary, why: str) -> None:
        flavor = self.catalog.named(job.namespace, job.flavor)
        if flavor is None:
            await self._fail(job, "FlavorNotFound", f"its flavor {job.flavor!r} is gone ({why})")
            return

        def reset_and_enqueue() -> bool:
            with contextlib.suppress(Exception):
                Job.fetch(job.ref.rq_id, connection=self.redis).delete(remove_from_queue=True)
            self.redis.delete(queues.marker_key(job.ref))
            return queues.enqueue(
                self.redis,
                flavor.metadata.name,
                job.ref,
                job.priority,
                queues.job_timeout(flavor, job.task),
                flavor.shared,
            )

        if await asyncio.to_thread(reset_and_enqueue):
            log.warning("re-enqueued %s/%s: %s", job.namespace, job.name, why)

            def note(status: dict[str, Any]) -> None:
                status["message"] = f"re-enqueued: {why}"

            await self.kube.update_status(
                LLMJOBS, job.namespace, job.name, note, uid=job.uid, generation=job.generation
            )

    async def _fail(self, job: JobSummary, reason: str, message: str) -> None:
        """End the job with a failure (unless it finished meanwhile) and wake its waiters."""
        outcome = results.Outcome(
            ok=False, error=results.ErrorInfo(reason=reason, message=message, status_code=504)
        )
        stored, nbytes = await results.store(
            self.aredis, job.uid, job.generation, outcome, self.settings.result_ttl_seconds
        )
        await self.kube.update_status(
            LLMJOBS,
            job.namespace,
            job.name,
            jobstatus.mark_finished(job.ref, stored, nbytes),
            uid=job.uid,
            generation=job.generation,
        )
        log.warning("%s/%s failed: %s", job.namespace, job.name, message)
