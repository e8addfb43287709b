"""Which queue entries died with their worker, from what Redis holds for them.

A queue entry (a job version, or a line of a batch) that a worker started holds
a lease the worker renews; the enqueue marker says someone put it on a queue;
RQ's record says where it stands; the attempt counter how often it started.
An entry is dead when its marker or record is gone (Redis lost its data), its
attempt ended without finishing the work, or it was started and its lease
lapsed. The job and batch controllers queue dead entries again, up to the
attempts allowed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from redis import Redis
from rq.job import Job

from llmloom import queues, timestamps

DEAD_RQ_STATES = {"failed", "stopped", "canceled"}
"""RQ states of an attempt that ended without finishing the job (a lost worker)."""


@dataclass(frozen=True)
class QueueState:
    """What Redis holds for one job version."""

    marked: bool
    """The enqueue marker exists (someone enqueued this version)."""
    rq_status: str | None
    """RQ's status of the attempt, None when RQ has no such job."""
    leased: bool = False
    """A worker holds the lease of this version (it is alive and running it)."""
    started: float | None = None
    """When RQ started the attempt."""
    attempts: int = 0
    """How many times workers started this version (the status may not say yet)."""


LEASE_GRACE_SECONDS = 5.0
"""A started attempt may lack its lease this long (the worker sets it right after RQ
starts the job)."""


def attempt_dead(q: QueueState, now: float) -> bool:
    """Whether the job version's queue entry or attempt is gone or dead."""
    if not q.marked or q.rq_status is None or q.rq_status in DEAD_RQ_STATES:
        return True
    if q.rq_status == "started" and not q.leased:
        return q.started is None or now - q.started > LEASE_GRACE_SECONDS
    return False


def _rq_time(raw: bytes | None) -> float | None:
    """RQ's timestamps ("2026-11-22T18:30:00.123456Z") as epoch seconds."""
    with contextlib.suppress(ValueError):
        return timestamps.epoch(raw.decode() if raw else None)
    return None


def read(redis: Redis, refs: list[queues.JobRef]) -> dict[str, QueueState]:
    """One pipelined round trip: marker, RQ status, lease and attempts of every entry."""
    if not refs:
        return {}
    pipe = redis.pipeline(transaction=False)
    for ref in refs:
        pipe.exists(queues.marker_key(ref))
        pipe.hmget(Job.key_for(ref.rq_id), ["status", "started_at"])
        pipe.exists(queues.lease_key(ref))
        pipe.get(queues.attempts_key(ref.rq_id))
    replies = pipe.execute()
    state = {}
    for i, ref in enumerate(refs):
        marked, (status, started), leased, tries = replies[4 * i : 4 * i + 4]
        state[ref.rq_id] = QueueState(
            marked=bool(marked),
            rq_status=status.decode() if status else None,
            leased=bool(leased),
            started=_rq_time(started),
            attempts=int(tries or 0),
        )
    return state
