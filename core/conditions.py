"""Pure functions over ``status.conditions`` and the job state derived from them.

Every writer (operator handlers through kopf's ``patch.fns``, the worker through
read-modify-write with resourceVersion) applies these to the freshest object it
has, so a condition written by one component is never dropped by another.
"""

from __future__ import annotations

from typing import Any

from llmloom import timestamps

ACCEPTED = "Accepted"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
READY = "Ready"
SUSPENDED = "Suspended"


def find(conditions: list[dict[str, Any]], ctype: str) -> dict[str, Any] | None:
    """The condition of the given type, or None."""
    return next((c for c in conditions if c.get("type") == ctype), None)


def is_true(conditions: list[dict[str, Any]], ctype: str, generation: int | None = None) -> bool:
    """Whether the condition is True (for the given generation, when one is given)."""
    c = find(conditions, ctype)
    if c is None or c.get("status") != "True":
        return False
    return generation is None or c.get("observedGeneration") == generation


def set_condition(
    conditions: list[dict[str, Any]],
    ctype: str,
    status: str,
    reason: str,
    message: str = "",
    generation: int | None = None,
    at: str | None = None,
) -> list[dict[str, Any]]:
    """A new list with the condition set; lastTransitionTime moves only when status changes."""
    old = find(conditions, ctype)
    changed = old is None or old.get("status") != status
    cond: dict[str, Any] = {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": (at or timestamps.now())
        if changed or old is None
        else old["lastTransitionTime"],
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    out = [c for c in conditions if c.get("type") != ctype]
    out.append(cond)
    return out


def job_state(conditions: list[dict[str, Any]], running: bool = False) -> str:
    """The one-word state of a job, derived from its conditions."""
    if is_true(conditions, SUCCEEDED):
        return "Succeeded"
    if is_true(conditions, FAILED):
        return "Failed"
    if is_true(conditions, SUSPENDED):
        return "Suspended"
    if running:
        return "Running"
    if is_true(conditions, ACCEPTED):
        return "Queued"
    return "Pending"


def finished(conditions: list[dict[str, Any]], generation: int | None = None) -> bool:
    """Whether the job reached Succeeded or Failed (for the given generation)."""
    return is_true(conditions, SUCCEEDED, generation) or is_true(conditions, FAILED, generation)
