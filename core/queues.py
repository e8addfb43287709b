"""Queue names, job payloads and the one way a job is put on its queue.

Jobs travel on RQ queues, one per flavor, with RQ's JSON serializer: the
payload is a reference to the LLMJob resource (namespace, name, uid,
generation), never the work itself, so the resource stays the source of truth.
The API and the operator may both enqueue the same job version; a marker key
set with SET NX makes sure exactly one of them does.
"""

from __future__ import annotations

from pydantic import BaseModel
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

JOB_FUNCTION = "llmloom.worker.tasks.run_job"
"""Import path of the function RQ calls for every job."""
MARKER_TTL_SECONDS = 7 * 24 * 3600


class JobRef(BaseModel):
    """What a queue entry carries: which LLMJob, and which version of its spec."""

    namespace: str
    name: str
    uid: str
    generation: int

    @property
    def rq_id(self) -> str:
        """The RQ job id: one per job version, so RQ's registries show each version once."""
        return f"{self.uid}-g{self.generation}"


def queue_name(namespace: str, flavor: str) -> str:
    """The RQ queue of one flavor (flavors are namespaced, so is the queue)."""
    return f"{namespace}/{flavor}"


def marker_key(ref: JobRef) -> str:
    return f"llmloom:enqueued:{ref.uid}:{ref.generation}"


def queue(name: str, redis: Redis) -> Queue:
    """An RQ queue speaking JSON."""
    return Queue(name, connection=redis, serializer=JSONSerializer)


def enqueue(redis: Redis, flavor: str, ref: JobRef, timeout_seconds: int = 3600) -> bool:
    """Put one job version on its flavor's queue unless someone already did.

    Returns:
        True when this call enqueued it, False when it was already enqueued.
    """
    if not redis.set(marker_key(ref), "1", nx=True, ex=MARKER_TTL_SECONDS):
        return False
    try:
        queue(queue_name(ref.namespace, flavor), redis).enqueue_call(
            JOB_FUNCTION,
            args=(ref.model_dump(),),
            job_id=ref.rq_id,
            timeout=timeout_seconds,
            result_ttl=3600,
            failure_ttl=7 * 24 * 3600,
        )
    except Exception:
        # Not enqueued after all: let the next caller (or the operator's retry) try.
        redis.delete(marker_key(ref))
        raise
    return True
