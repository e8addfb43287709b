"""Kubernetes Events: what happened to a flavor or a job, for `kubectl describe`.

Posting is best effort: an Event that cannot be written is logged, never
allowed to fail the work it describes.

A job's routine Events (Accepted, Completed) are posted only for jobs people
create themselves (``llmloom.origin.routine_events``); warnings (failures,
retries, requeues) are posted for every job.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from llmloom import API_VERSION, timestamps
from llmloom.kube import Kube, KubeError, Resource

log = logging.getLogger(__name__)
EVENTS = Resource("", "v1", "events")
EventType = Literal["Normal", "Warning"]


def event_body(
    kind: str, meta: dict[str, Any], reason: str, message: str, type: EventType, component: str
) -> dict[str, Any]:
    """A core/v1 Event about one LLMLoom object."""
    now = timestamps.now()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": kind,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid", ""),
        },
        "reason": reason,
        "message": message[:1024],
        "type": type,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


async def post(
    kube: Kube,
    kind: str,
    meta: dict[str, Any],
    reason: str,
    message: str,
    type: EventType = "Normal",
    component: str = "llmloom",
) -> None:
    """Record an Event on the object named by ``meta`` (name, namespace, uid)."""
    try:
        await kube.create(
            EVENTS, meta["namespace"], event_body(kind, meta, reason, message, type, component)
        )
    except (KubeError, OSError) as exc:
        log.warning(
            "could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], exc
        )
