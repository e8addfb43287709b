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


def event_namespace(meta: dict[str, Any]) -> str:
    """Where the events of an object are kept."""
    return str(meta.get("namespace") or "default")


def event_body(
    kind: str, meta: dict[str, Any], reason: str, message: str, type: EventType, component: str
) -> dict[str, Any]:
    """A core/v1 Event about one LLMLoom object (about a cluster-scoped one, such as a
    ClusterFlavor, in ``default``, as Kubernetes records events of Nodes)."""
    now = timestamps.now()
    involved = {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": meta["name"],
        "uid": meta.get("uid", ""),
    }
    if meta.get("namespace"):
        involved["namespace"] = meta["namespace"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": event_namespace(meta)},
        "involvedObject": involved,
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
            EVENTS, event_namespace(meta), event_body(kind, meta, reason, message, type, component)
        )
    except (KubeError, OSError) as exc:
        log.warning("could not post event %s on %s %s: %s", reason, kind, meta["name"], exc)
