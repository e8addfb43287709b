"""Assembles a worker process: settings, the event loop's context, RQ queues, the runner."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from llmloom import queues, redisclients, sharing, tokens
from llmloom.kube import CLUSTER_FLAVORS, FLAVORS
from llmloom.resources import ClusterFlavor, Flavor
from llmloom.settings import WorkerSettings
from llmloom.worker.calls import find_flavor
from llmloom.worker.deps import SHARED_SUFFIX
from llmloom.worker.readiness import wait_for_model
from llmloom.worker.runner import ConcurrentWorker, TenantQueues
from llmloom.worker.tasks import Context

MODEL_LOAD_SECONDS = 3600.0
"""How long a worker waits for its model server to load or pull the model."""


async def _flavor(context: Context, settings: WorkerSettings) -> Flavor:
    first = settings.queues[0]
    if context.deps.serves_shared:
        name = first.removesuffix(SHARED_SUFFIX)
        return ClusterFlavor.model_validate(await context.deps.kube.get(CLUSTER_FLAVORS, "", name))
    namespace, _, name = first.partition("/")
    return Flavor.model_validate(await context.deps.kube.get(FLAVORS, namespace, name))


@dataclass
class _Terms:
    """Each tenant's weight and the reserved slots on the shared model, from its
    ClusterFlavor as read lately (an edit reaches the worker within
    ``flavor_cache_seconds``)."""

    context: Context
    settings: WorkerSettings
    flavor: Flavor
    read_at: float = field(default_factory=time.monotonic)

    def _latest(self) -> Flavor:
        if time.monotonic() - self.read_at > self.settings.flavor_cache_seconds:
            self.read_at = time.monotonic()
            # The read the jobs make too (Deps.cached): one GET serves both.
            with contextlib.suppress(Exception):  # the API server away: the last terms
                name = self.flavor.metadata.name
                found = self.context.call(find_flavor(self.context.deps, "", name))
                self.flavor = found or self.flavor
        return self.flavor

    def weight(self, tenant: str) -> int:
        terms = sharing.terms(self._latest(), tenant)
        return terms.weight if terms else sharing.DEFAULT_WEIGHT

    def reserve(self, slots: int) -> int:
        return sharing.reserve_of(self._latest(), slots)


def run(settings: WorkerSettings) -> None:
    """Take jobs from the configured queues until stopped (or empty, in burst mode)."""
    if not settings.queues:
        raise SystemExit("no queues to work on: pass --queue NAMESPACE/FLAVOR")
    tokens.prepare_offline_cache()
    context = Context(settings)
    redis = redisclients.connect(settings.redis_url)
    try:
        flavor = context.call(_flavor(context, settings))
        if settings.wait_for_model:
            endpoint = settings.endpoint or flavor.spec.endpoint
            if endpoint is None:
                name = flavor.metadata.name
                raise SystemExit(f"Flavor {name!r} has no endpoint and LLMLOOM_ENDPOINT is unset")
            context.call(
                wait_for_model(
                    context.deps.http,
                    flavor.spec.provider,
                    endpoint,
                    flavor.spec.model,
                    MODEL_LOAD_SECONDS,
                )
            )
        if settings.ready_file:
            Path(settings.ready_file).touch()
        concurrency = settings.concurrency or flavor.spec.concurrency
        if context.deps.serves_shared:
            terms = _Terms(context, settings, flavor)
            tenants = TenantQueues(redis, flavor.metadata.name, terms, concurrency)
            worker = ConcurrentWorker(context, redis, [], concurrency, tenants)
        else:
            own = [
                queues.queue(name, redis)
                for flavor_queue in settings.queues
                for name in queues.queue_names(flavor_queue)
            ]
            worker = ConcurrentWorker(context, redis, own, concurrency)
        worker.install_signal_handlers()
        worker.work(burst=settings.burst)
    finally:
        context.close()
        redis.close()
