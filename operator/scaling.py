"""How many model-server pods a self-hosted flavor should run, from its queue.

Pure: the flavor reconciler passes the queue depth, the current count, when
the count last changed and since when the load has been lower, and keeps what
comes out. Scaling up is immediate (jobs wait in the queue while pods start,
so scale-from-zero loses nothing); scaling down waits until the load has
stayed lower for the flavor's scale-down delay, so a pause between bursts does
not cost a model reload.

Only a change of the count moves ``lastScaleTime`` (written to the status); the
start of a quiet spell is the reconciler's memory, not the object's, so a
steady flavor costs the API server no write per resync. An operator that
restarts forgets the spell and waits one more delay: it scales down late,
never early.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class ScaleDecision:
    replicas: int
    last_scale_time: datetime | None
    """When the count last changed."""
    low_since: datetime | None
    """Since when the load has needed fewer pods than run; None while it needs them all."""


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
    low_since: datetime | None,
    now: datetime,
    delay_seconds: float,
) -> ScaleDecision:
    """The number of pods to run now."""
    want = wanted(pending, running, per_pod, rmin, rmax)
    if want > current:
        return ScaleDecision(want, now, None)
    if want == current:
        return ScaleDecision(current, last_scale_time, None)
    since = low_since or now
    if now - since >= timedelta(seconds=delay_seconds):
        return ScaleDecision(want, now, None)
    return ScaleDecision(current, last_scale_time, since)
