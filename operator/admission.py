"""Whether an LLMJob can run on its Flavor, decided from the objects alone.

No I/O here: the handlers pass in the job and the flavor they already hold
(from kopf's index), and apply the decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmloom import conditions
from llmloom.queues import queue_name
from llmloom.resources import Flavor, LLMJob

Action = Literal["enqueue", "wait", "reject", "skip", "suspend"]


@dataclass(frozen=True)
class Admission:
    """What to do with one job version, and the reason to record."""

    action: Action
    reason: str
    message: str


def admit(
    job: LLMJob, flavor: Flavor | None, age_seconds: float, grace_seconds: float
) -> Admission:
    """Decide the fate of the job's current spec.

    Args:
        job: the job as last seen.
        flavor: the flavor the job names, or None when it does not exist.
        age_seconds: time since the job was created.
        grace_seconds: how long a missing flavor is waited for (manifests applied
            together by GitOps arrive in no set order).
    """
    ns, gen = job.metadata.namespace, job.metadata.generation
    conds = [c.wire() for c in job.status.conditions]
    if conditions.finished(conds, gen):
        return Admission("skip", "AlreadyFinished", "this spec version already finished")
    if job.spec.suspend:
        return Admission("suspend", "Suspended", "held by spec.suspend; set it to false to run")
    if flavor is None:
        if age_seconds < grace_seconds:
            return Admission(
                "wait",
                "FlavorNotFound",
                f"waiting for Flavor {job.spec.flavor!r} in namespace {ns!r}",
            )
        return Admission(
            "reject",
            "FlavorNotFound",
            f"Flavor {job.spec.flavor!r} does not exist in namespace {ns!r}",
        )
    # A document job is made of chat calls.
    needs = "chat" if job.spec.task == "document" else job.spec.task
    if needs not in flavor.spec.capabilities:
        return Admission(
            "reject",
            "TaskNotSupported",
            f"Flavor {flavor.metadata.name!r} cannot run task {job.spec.task!r} "
            f"(capabilities: {', '.join(flavor.spec.capabilities)})",
        )
    return Admission(
        "enqueue", "Enqueued", f"queued on {queue_name(ns, job.spec.flavor, job.spec.priority)}"
    )
