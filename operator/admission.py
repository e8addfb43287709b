"""Whether an LLMJob can run on its Flavor, decided from the objects alone.

No I/O here: the job controller passes in the job and the flavor it already
holds (from its watch caches), and writes the decision with ``record``.
Whether a job needs a decision at all is ``needs_admission``: its status says
whether its current spec version was handled, as a Kubernetes controller's
observedGeneration does (no annotation of the operator's own on the object).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from llmloom import conditions, origin, timestamps
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
            f"Flavor {job.spec.flavor!r} does not exist in namespace {ns!r}, and no "
            "ClusterFlavor of that name is granted to it",
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
        "enqueue",
        "Enqueued",
        f"queued on {queue_name(ns, job.spec.flavor, job.spec.priority, flavor.shared)}",
    )


def needs_admission(body: Mapping[str, Any]) -> bool:
    """Whether the operator should decide on this job's current spec version: a job written
    by a person or through ``/v1/jobs`` (a request's job the API enqueued itself), not
    being deleted, whose version is neither accepted, suspended as asked, nor finished."""
    meta = body.get("metadata") or {}
    if origin.is_request(meta) or meta.get("deletionTimestamp"):
        return False
    gen = int(meta.get("generation") or 1)
    conds = (body.get("status") or {}).get("conditions") or []
    if conditions.finished(conds, gen) or conditions.is_true(conds, conditions.ACCEPTED, gen):
        return False
    suspended = bool((body.get("spec") or {}).get("suspend"))
    return not (suspended and conditions.is_true(conds, conditions.SUSPENDED, gen))


def record(adm: Admission, generation: int) -> Callable[[dict[str, Any]], None]:
    """A status mutation writing an admission of spec version ``generation`` (the caller
    writes it only while that version is current)."""

    def apply(status: dict[str, Any]) -> None:
        conds = [
            c
            for c in status.get("conditions", [])
            # A finished condition of an older spec version no longer describes the job.
            if c.get("type") not in (conditions.SUCCEEDED, conditions.FAILED)
            or c.get("observedGeneration") == generation
        ]
        if adm.action == "reject":
            conds = conditions.set_condition(
                conds, conditions.ACCEPTED, "False", adm.reason, adm.message, generation
            )
            conds = conditions.set_condition(
                conds, conditions.FAILED, "True", adm.reason, adm.message, generation
            )
            status["completionTime"] = timestamps.now()
        elif adm.action == "suspend":
            conds = conditions.set_condition(
                conds, conditions.SUSPENDED, "True", adm.reason, adm.message, generation
            )
        else:
            state = "True" if adm.action == "enqueue" else "False"
            conds = conditions.set_condition(
                conds, conditions.ACCEPTED, state, adm.reason, adm.message, generation
            )
        if adm.action != "suspend" and conditions.find(conds, conditions.SUSPENDED):
            conds = conditions.set_condition(
                conds, conditions.SUSPENDED, "False", "Resumed", "spec.suspend is false", generation
            )
        if not conditions.finished(conds, generation) or adm.action == "reject":
            status["message"] = adm.message
        status["conditions"] = conds
        status["state"] = conditions.job_state(conds, running=status.get("state") == "Running")
        status["observedGeneration"] = generation

    return apply
