"""Queue names, job payloads and the one way a job is put on its queue.

Jobs travel on RQ queues, one per flavor, with RQ's JSON serializer: the
payload is a reference to the LLMJob resource (namespace, name, uid,
generation), never the work itself, so the resource stays the source of truth.
The API and the operator may both enqueue the same job version; a marker key
set with SET NX makes sure exactly one of them does.

Each flavor has three queues, one per priority band (``spec.priority`` above,
at or below zero); a worker takes from them in that order, so a high-priority
job never waits behind normal ones. A flavor's queues are ``namespace/flavor``;
a shared model (a ClusterFlavor) has three per tenant, ``flavor@namespace``,
which its workers serve in weighted fair order (``llmloom.sharing``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import now

from llmloom import timestamps
from llmloom.resources import Flavor, LLMJob

JOB_FUNCTION = "llmloom.worker.tasks.run_job"
"""Import path of the function RQ calls for every job."""
MARKER_TTL_SECONDS = 7 * 24 * 3600


class JobRef(BaseModel):
    """What a queue entry carries: which LLMJob, and which version of its spec; for a
    request's job, its spec too (a few hundred bytes: the request itself is stored by
    reference), so that the worker starts it without reading the object."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: dict[str, Any] | None = None
    """The job's spec (camelCase, as stored), for jobs made for requests."""
    created: str | None = None
    """The job's creationTimestamp, with ``spec`` (its deadline counts from it)."""
    line: int | None = None
    """Set for a line of a batch (0-based position): ``name`` and ``uid`` are then the
    LLMBatch's, and the line is a work item of its own, not an LLMJob."""

    @classmethod
    def of(cls, job: LLMJob, with_spec: bool = False) -> JobRef:
        """The reference to a job's current spec version (carrying the spec, if asked)."""
        meta = job.metadata
        ref = cls(
            namespace=meta.namespace, name=meta.name, uid=meta.uid, generation=meta.generation
        )
        if with_spec:
            ref.spec = job.spec.wire()
            created = meta.creation_timestamp
            ref.created = timestamps.format(created) if created else None
        return ref

    @property
    def rq_id(self) -> str:
        """The RQ job id: one per job version (or batch line), so RQ's registries show each
        once."""
        if self.line is not None:
            return f"{self.uid}-l{self.line}"
        return f"{self.uid}-g{self.generation}"


def queue_name(namespace: str, flavor: str, priority: int = 0, shared: bool = False) -> str:
    """The RQ queue of one flavor and priority band: ``namespace/flavor`` (flavors are
    namespaced, so are queues), or ``flavor@namespace`` for a tenant's work on a shared
    model (``namespace`` is then the tenant's)."""
    base = f"{flavor}@{namespace}" if shared else f"{namespace}/{flavor}"
    return f"{base}:high" if priority > 0 else f"{base}:low" if priority < 0 else base


def shared_tenants(redis: Redis, flavor: str) -> list[str]:
    """The tenants that have (or had) queues on a shared model, from RQ's set of queues."""
    prefix = f"{Queue.redis_queue_namespace_prefix}{flavor}@"
    found: set[str] = set()
    for raw in redis.smembers(Queue.redis_queues_keys):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        if key.startswith(prefix):
            found.add(key[len(prefix) :].removesuffix(":high").removesuffix(":low"))
    return sorted(found)


def queue_names(flavor_queue: str) -> list[str]:
    """The band queues of ``namespace/flavor``, highest priority first (a worker's order)."""
    return [f"{flavor_queue}:high", flavor_queue, f"{flavor_queue}:low"]


@dataclass(frozen=True)
class Depth:
    """How much work a flavor has."""

    pending: int
    running: int


def depth(redis: Redis, namespace: str, flavor: str, shared: bool = False) -> Depth:
    """Jobs waiting on and running from a flavor's queues (every tenant's, for a shared
    model: ``namespace`` is then ignored)."""
    bases = (
        [queue_name(t, flavor, shared=True) for t in shared_tenants(redis, flavor)]
        if shared
        else [queue_name(namespace, flavor)]
    )
    pending = running = 0
    for base in bases:
        for name in queue_names(base):
            q = queue(name, redis)
            pending += q.count
            running += StartedJobRegistry(queue=q).get_job_count(cleanup=False)
    return Depth(pending=pending, running=running)


DOCUMENT_ATTEMPT_SECONDS = 24 * 3600
"""RQ's limit for one attempt of a document job: a backstop only, since a document
takes many calls; ``activeDeadlineSeconds`` is the limit a user sets."""


def job_timeout(flavor: Flavor, task: str = "chat") -> int:
    """RQ's limit for one attempt: the provider call's timeout and room for the rest (a
    document's attempt makes many calls: a day). A dead worker is noticed sooner, by
    its lapsed lease."""
    if task == "document":
        return DOCUMENT_ATTEMPT_SECONDS
    return int(flavor.spec.timeout_seconds) + 30


def lease_key(ref: JobRef) -> str:
    """Held (with a short TTL, renewed) by the worker running the job version: when a
    started attempt has no lease, its worker died and the operator enqueues it again."""
    return f"llmloom:lease:{ref.rq_id}"


ATTEMPTS_TTL_SECONDS = 7 * 24 * 3600
"""How long a version's attempt count is kept (the operator deletes it with the job)."""


def attempts_key(rq_id: str) -> str:
    """How many times workers have started one job version (RQ job id ``rq_id``): counted
    in Redis when a worker takes it, so that attempts are known even of a worker that
    died before it wrote anything to the job's status."""
    return f"llmloom:attempts:{rq_id}"


def marker_key(ref: JobRef) -> str:
    if ref.line is not None:
        return f"llmloom:enqueued:{ref.uid}:l{ref.line}"
    return f"llmloom:enqueued:{ref.uid}:{ref.generation}"


def queue(name: str, redis: Redis) -> Queue:
    """An RQ queue speaking JSON."""
    return Queue(name, connection=redis, serializer=JSONSerializer)


# RQ's Job is built with a connection; this one is never used (building a job makes no
# request), so any process can write the records of an enqueue into its own pipeline.
_UNUSED = Redis()


@dataclass(frozen=True)
class Work:
    """One job version (or batch line) to put on a flavor's queue."""

    ref: JobRef
    flavor: str
    priority: int = 0
    timeout_seconds: int = 3600
    shared: bool = False
    """``flavor`` is a ClusterFlavor: the work goes on the tenant's queue of it."""


def stage(pipe: Any, work: Work) -> None:
    """Add to ``pipe`` (a pipeline, sync or asyncio) the writes that put ``work`` on its
    queue: the job's hash, its queue entry and the set of queues, as RQ's
    ``Queue.enqueue`` writes them (the worker dequeues it with RQ), and the marker.

    RQ's own enqueue makes four round trips (one asks the server's version); staged,
    a request's whole bookkeeping is one. The caller owns the marker's check.
    """
    ref = work.ref
    name = queue_name(ref.namespace, work.flavor, work.priority, work.shared)
    job = Job.create(
        JOB_FUNCTION,
        args=(ref.model_dump(exclude_none=True),),
        id=ref.rq_id,
        timeout=work.timeout_seconds,
        result_ttl=3600,
        failure_ttl=7 * 24 * 3600,
        connection=_UNUSED,
        serializer=JSONSerializer,
        origin=name,
    )
    job.enqueued_at = now()
    job._status = JobStatus.QUEUED  # as RQ's Queue._prepare_for_queue sets it
    key = Queue.redis_queue_namespace_prefix + name
    pipe.set(marker_key(ref), "1", ex=MARKER_TTL_SECONDS)
    pipe.sadd(Queue.redis_queues_keys, key)
    pipe.hset(job.key, mapping=job.to_dict())
    pipe.rpush(key, job.id)


def enqueue_many(redis: Redis, works: list[Work]) -> int:
    """Put job versions on their queues, each unless someone already did: two round trips
    however many (the markers, then the writes).

    Returns:
        How many this call enqueued.
    """
    if not works:
        return 0
    with redis.pipeline(transaction=False) as pipe:
        for w in works:
            pipe.set(marker_key(w.ref), "1", nx=True, ex=MARKER_TTL_SECONDS)
        won = [w for w, ok in zip(works, pipe.execute(), strict=True) if ok]
    if not won:
        return 0
    try:
        with redis.pipeline(transaction=False) as pipe:
            for w in won:
                stage(pipe, w)
            pipe.execute()
    except Exception:
        # Not enqueued after all: let the next caller (or the operator's retry) try.
        redis.delete(*(marker_key(w.ref) for w in won))
        raise
    return len(won)


def enqueue(
    redis: Redis,
    flavor: str,
    ref: JobRef,
    priority: int = 0,
    timeout_seconds: int = 3600,
    shared: bool = False,
) -> bool:
    """Put one job version on its flavor's queue unless someone already did.

    Returns:
        True when this call enqueued it, False when it was already enqueued.
    """
    return enqueue_many(redis, [Work(ref, flavor, priority, timeout_seconds, shared)]) == 1


def work_of(job: LLMJob, flavor: Flavor) -> Work:
    """The queue entry of a job's current version: its priority band and attempt limit; a
    request's job carries its spec."""
    ref = JobRef.of(job, with_spec=job.spec.request is not None)
    return Work(
        ref,
        flavor.metadata.name,
        job.spec.priority,
        job_timeout(flavor, job.spec.task),
        flavor.shared,
    )


def enqueue_job(redis: Redis, job: LLMJob, flavor: Flavor) -> bool:
    """Put a job's current version on its flavor's queue unless someone already did.

    Returns:
        True when this call enqueued it.
    """
    return enqueue_many(redis, [work_of(job, flavor)]) == 1
