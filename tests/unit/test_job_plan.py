"""What the operator does about jobs between their events."""

from __future__ import annotations

from dataclasses import replace

from llmloom.operator.jobs import JobSummary, plan, summarize
from llmloom.operator.recovery import QueueState

NOW = 1_000_000.0
JOB = JobSummary(
    namespace="t1",
    name="j",
    uid="u",
    generation=1,
    flavor="f",
    priority=0,
    created=NOW - 10,
    deadline=None,
    ttl=None,
    accepted=True,
    finished=False,
    completed=None,
    attempts=1,
    suspended=False,
)
ID = JOB.ref.rq_id
QUEUED = QueueState(marked=True, rq_status="queued")


def kinds(jobs: list[JobSummary], state: dict[str, QueueState]) -> list[str]:
    return [a.kind for a in plan(jobs, state, NOW, max_attempts=3)]


def test_a_healthy_queued_or_running_job_is_left_alone() -> None:
    assert kinds([JOB], {ID: QUEUED}) == []
    running = QueueState(marked=True, rq_status="started", leased=True, started=NOW - 60)
    assert kinds([JOB], {ID: running}) == []


def test_a_job_redis_forgot_is_enqueued_again() -> None:
    (action,) = plan([JOB], {}, NOW, 3)
    assert action.kind == "requeue" and "queue entry is gone" in action.message


def test_a_job_just_created_is_not_missed_before_the_api_queued_it() -> None:
    assert kinds([replace(JOB, created=NOW - 1)], {}) == []


def test_a_started_attempt_without_lease_means_a_dead_worker() -> None:
    dead = QueueState(marked=True, rq_status="started", leased=False, started=NOW - 30)
    assert kinds([JOB], {ID: dead}) == ["requeue"]
    just_started = replace(dead, started=NOW - 1)  # the worker sets its lease right after
    assert kinds([JOB], {ID: just_started}) == []


def test_after_max_attempts_the_job_fails() -> None:
    failed = QueueState(marked=True, rq_status="failed")
    assert kinds([replace(JOB, attempts=3)], {ID: failed}) == ["lost"]


def test_attempts_counted_in_redis_count_when_the_status_never_said() -> None:
    """Workers that died before they marked the job Running still used its attempts."""
    dead = QueueState(marked=True, rq_status="started", started=NOW - 30, attempts=3)
    assert kinds([replace(JOB, attempts=0)], {ID: dead}) == ["lost"]
    assert kinds([replace(JOB, attempts=0)], {ID: replace(dead, attempts=2)}) == ["requeue"]


def test_deadline_counts_from_creation_and_applies_to_queued_jobs() -> None:
    late = replace(JOB, deadline=5)
    (action,) = plan([late], {ID: QUEUED}, NOW, 3)
    assert action.kind == "deadline" and "activeDeadlineSeconds=5" in action.message
    assert kinds([replace(JOB, deadline=60)], {ID: QUEUED}) == []


def test_finished_jobs_expire_after_their_ttl() -> None:
    done = replace(JOB, finished=True, completed=NOW - 5, ttl=10)
    assert kinds([done], {}) == []
    assert kinds([replace(done, ttl=5)], {}) == ["expire"]
    assert kinds([replace(done, ttl=None)], {}) == []


def test_suspended_and_unaccepted_jobs_need_no_queue_entry() -> None:
    assert kinds([replace(JOB, suspended=True)], {}) == []
    assert kinds([replace(JOB, accepted=False)], {}) == []


def test_summary_reads_the_current_version() -> None:
    body = {
        "metadata": {
            "namespace": "t1",
            "name": "j",
            "uid": "u",
            "generation": 2,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"flavor": "f", "priority": 5, "activeDeadlineSeconds": 30},
        "status": {
            "attempts": 1,
            "conditions": [
                {
                    "type": "Accepted",
                    "status": "True",
                    "reason": "Enqueued",
                    "observedGeneration": 2,
                },
                {
                    "type": "Succeeded",
                    "status": "True",
                    "reason": "Completed",
                    "observedGeneration": 1,
                },
            ],
        },
    }
    s = summarize(body)
    assert s.accepted and not s.finished and s.priority == 5 and s.deadline == 30
    assert s.ref.rq_id == "u-g2"
