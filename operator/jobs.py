"""Watching over jobs between their events: deadlines, TTLs, lost queue entries.

The LLMJob resources are the source of truth and Redis only the transport.
Every few seconds the controller compares the jobs it has seen (kept current
by kopf's watch) with Redis: a job whose queue entry is gone (Redis lost its
data) or whose attempt died with its worker is enqueued again; a job past its
``activeDeadlineSeconds`` fails with ``DeadlineExceeded``; a finished job past
its ``ttlSecondsAfterFinished`` is deleted, and with it its stored results.
The decisions are made by ``plan`` from plain data; ``JobController`` does
the I/O.
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
from llmloom.kube import FLAVORS, LLMJOBS, Kube, KubeError
from llmloom.operator import recovery
from llmloom.operator.recovery import QueueState, attempt_dead
from llmloom.resources import Flavor
from llmloom.settings import OperatorSettings

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
        flavor_used=status.get("flavorUsed"),
        requested=origin.admitted_by_api(meta),
        request_key=(spec.get("request") or {}).get("key"),
        spec=dict(spec) if origin.is_request(meta) else None,
    )


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
    """Keeps the operator's view of jobs and acts on ``plan`` every resync period."""

    def __init__(
        self, settings: OperatorSettings, kube: Kube, redis: Redis, aredis: AsyncRedis
    ) -> None:
        self.settings, self.kube, self.redis, self.aredis = settings, kube, redis, aredis
        self.jobs: dict[str, JobSummary] = {}
        self.errors = 0
        """Actions that failed, since start."""
        self.unsettled: list[JobSummary] = []
        """Jobs that ended or went, whose admission charge may still hold an estimate."""

    def observe(self, event: str | None, body: Mapping[str, Any]) -> JobSummary | None:
        """Take in one watch event of a job.

        Returns:
            A deleted job, whose queue entries and results are to be ``forget``-ten.
        """
        uid = body["metadata"]["uid"]
        if event == "DELETED":
            summary = self.jobs.pop(uid, None) or summarize(body)
            if summary.requested and not summary.finished:
                self.unsettled.append(summary)  # cancelled: its estimate goes back
            return summary
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

    def forget(self, job: JobSummary) -> None:
        """A deleted job's queue entries go with it, and so do its stored results, unless it
        was a request's (its task stays readable for the results' lifetime) whose stored
        request goes instead. Blocking: Redis through RQ's synchronous client."""
        keys = (
            []
            if job.request_key
            else [results.result_key(job.uid, v) for v in range(1, job.generation + 1)]
        )
        if job.request_key and job.request_key.startswith(bodies.PREFIX):
            keys.append(job.request_key)
        try:
            for v in range(1, job.generation + 1):
                ref = job.ref.model_copy(update={"generation": v})
                keys += [queues.marker_key(ref), queues.attempts_key(ref.rq_id)]
                if not job.finished:  # still queued, maybe: take it off (a finished one is not)
                    with contextlib.suppress(Exception):
                        Job.fetch(ref.rq_id, connection=self.redis).delete(remove_from_queue=True)
            self.redis.delete(*keys)
        except Exception:
            log.exception("cleaning up after job %s/%s failed", job.namespace, job.name)

    def queue_state(self, jobs: list[JobSummary]) -> dict[str, QueueState]:
        """What Redis holds for every job version, in one round trip."""
        return recovery.read(self.redis, [job.ref for job in jobs])

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.job_resync_seconds)
            try:
                await self.tick()
            except Exception:
                log.exception("job resync failed")

    async def settle(self, now: float) -> None:
        """Settle the admission charges the API left: a request answered 202 whose task
        nobody asked about again, or a cancelled one. The API settles a charge when it
        sees the answer; one not settled after ``SETTLE_AFTER_SECONDS`` is settled here,
        with the tokens in the job's status (none for a job deleted unfinished), or its
        estimate would hold the tenant's budget for ever. Claiming is atomic, so a
        charge is settled once."""
        waiting, self.unsettled = self.unsettled, []
        for job in waiting:
            ended = job.completed if job.finished else None
            if ended is not None and now - ended < SETTLE_AFTER_SECONDS:
                self.unsettled.append(job)  # the API's waiter comes first
                continue
            charge = await ratelimit.claim(self.aredis, job.uid, job.generation)
            if charge is not None:
                prompt, completion = job.spent if job.finished else (0, 0)
                await ratelimit.apply(self.aredis, charge, prompt, completion, job.flavor_used)

    async def tick(self) -> None:
        await self.settle(time.time())
        jobs = list(self.jobs.values())
        check = [j for j in jobs if needs_queue_check(j)]
        state = await asyncio.to_thread(self.queue_state, check) if check else {}
        for action in plan(jobs, state, time.time(), self.settings.max_attempts):
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
            log.info("deleting %s/%s: %s", job.namespace, job.name, action.message)
            await self.kube.delete(LLMJOBS, job.namespace, job.name)
        elif action.kind == "requeue":
            await self._requeue(job, action.message)
        else:
            reason = "DeadlineExceeded" if action.kind == "deadline" else "WorkerLost"
            await self._fail(job, reason, action.message)

    async def _requeue(self, job: JobSummary, why: str) -> None:
        flavor = Flavor.model_validate(await self.kube.get(FLAVORS, job.namespace, job.flavor))

        def reset_and_enqueue() -> bool:
            with contextlib.suppress(Exception):
                Job.fetch(job.ref.rq_id, connection=self.redis).delete(remove_from_queue=True)
            self.redis.delete(queues.marker_key(job.ref))
            return queues.enqueue(
                self.redis, job.flavor, job.ref, job.priority, queues.job_timeout(flavor, job.task)
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
