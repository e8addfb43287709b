"""How a job's status records progress: the mutations the worker and the operator apply.

Each function returns a mutation of ``status`` for ``Kube.update_status``, so
it runs on the freshest object and never drops what another component wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmloom import conditions, results, timestamps
from llmloom.queues import JobRef
from llmloom.resources import Usage


def mark_running(attempt: int, started: str) -> Callable[[dict[str, Any]], None]:
    """A worker runs attempt number ``attempt`` (counted in Redis), started at ``started``."""

    def apply(status: dict[str, Any]) -> None:
        conds = status.get("conditions", [])
        if conditions.is_true(conds, conditions.SUSPENDED):
            # A worker only starts a version whose spec is not suspended; the operator
            # may not have recorded the resumption yet.
            conds = conditions.set_condition(
                conds, conditions.SUSPENDED, "False", "Resumed", "spec.suspend is false"
            )
            status["conditions"] = conds
        status["state"] = conditions.job_state(conds, running=True)
        _count_attempt(status, attempt, started)
        status["message"] = "running"

    return apply


def _count_attempt(status: dict[str, Any], attempt: int, started: str) -> None:
    # The first start stays; the count never goes down (Redis may have lost it).
    status.setdefault("startTime", started)
    status["attempts"] = max(int(status.get("attempts") or 0), attempt)


def mark_finished(
    ref: JobRef,
    outcome: results.Outcome,
    nbytes: int,
    usage: Usage | None = None,
    flavor: str | None = None,
    attempt: tuple[int, str] | None = None,
) -> Callable[[dict[str, Any]], None]:
    """The job version ended with ``outcome`` (stored in ``nbytes`` bytes); ``attempt``:
    the number and start of the worker's attempt that ended it (the operator's
    failures have none), for a job that ended before it was marked Running."""

    def apply(status: dict[str, Any]) -> None:
        conds = status.get("conditions", [])
        gen = ref.generation
        if outcome.ok:
            conds = conditions.set_condition(
                conds, conditions.SUCCEEDED, "True", "Completed", "result stored", gen
            )
            conds = [c for c in conds if c["type"] != conditions.FAILED]
            status["message"] = "completed"
        else:
            err = outcome.error or results.ErrorInfo(
                reason="Unknown", message="the job failed without a reason", status_code=500
            )
            conds = conditions.set_condition(
                conds, conditions.FAILED, "True", err.reason, err.message, gen
            )
            conds = conditions.set_condition(
                conds, conditions.SUCCEEDED, "False", err.reason, err.message, gen
            )
            status["message"] = err.message[:1024]
        status["conditions"] = conds
        status["state"] = conditions.job_state(conds)
        if attempt is not None:
            _count_attempt(status, *attempt)
        status["observedGeneration"] = gen
        status["completionTime"] = timestamps.now()
        if flavor is not None:
            status["flavorUsed"] = flavor
        status["result"] = {
            "version": gen,
            "key": results.result_key(ref.uid, gen),
            "bytes": nbytes,
        }
        if usage is not None:
            status["usage"] = usage.wire()

    return apply
