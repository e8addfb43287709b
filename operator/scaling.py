"""How many model-server pods a self-hosted flavor should run, from its queue.

Pure: the flavor reconciler passes the queue depth, the current count and the
time the load last justified that count, and writes back what comes out.
Scaling up is immediate (jobs wait in the queue while pods start, so
scale-from-zero loses nothing); scaling down waits until the load has stayed
lower for the flavor's scale-down delay, so a pause between bursts does not
cost a model reload.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class ScaleDecision:
    replicas: int
    last_scale_time: datetime
    """When the load last justified ``replicas``: the start of the scale-down delay."""


def wanted(pending: int, running: int, per_pod: int, rmin: int, rmax: int) -> int:
    """Pods needed for the load: one per ``per_pod`` jobs, within the bounds."""
    load = pending + running
    return min(rmax, max(rmin, math.ceil(load / max(1, per_pod))))


def decide(
    current: int,
    pending: int,
    running: int,
    per_pod: int,
    rmin: int,
    rmax: int,
    last_scale_time: datetime | None,
    now: datetime,
    delay_seconds: float,
) -> ScaleDecision:
    """The number of pods to run now."""
    want = wanted(pending, running, per_pod, rmin, rmax)
    if want >= current:
        return ScaleDecision(want, now)
    since = last_scale_time or now
    if now - since >= timedelta(seconds=delay_seconds):
        return ScaleDecision(want, now)
    return ScaleDecision(current, since)
