"""Assembles a worker process: settings, the event loop's context, RQ queues, the runner."""

from __future__ import annotations

from pathlib import Path

from redis import Redis

from llmloom import queues, tokens
from llmloom.kube import FLAVORS
from llmloom.resources import Flavor
from llmloom.settings import WorkerSettings
from llmloom.worker.readiness import wait_for_model
from llmloom.worker.runner import ConcurrentWorker
from llmloom.worker.tasks import Context

MODEL_LOAD_SECONDS = 3600.0
"""How long a worker waits for its model server to load or pull the model."""


async def _flavor(context: Context, settings: WorkerSettings) -> Flavor:
    namespace, _, name = settings.queues[0].partition("/")
    return Flavor.model_validate(await context.deps.kube.get(FLAVORS, namespace, name))


def run(settings: WorkerSettings) -> None:
    """Take jobs from the configured queues until stopped (or empty, in burst mode)."""
    if not settings.queues:
        raise SystemExit("no queues to work on: pass --queue NAMESPACE/FLAVOR")
    tokens.prepare_offline_cache()
    context = Context(settings)
    redis = Redis.from_url(settings.redis_url)
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
        worker = ConcurrentWorker(
            context,
            redis,
            [
                queues.queue(name, redis)
                for flavor_queue in settings.queues
                for name in queues.queue_names(flavor_queue)
            ],
            settings.concurrency or flavor.spec.concurrency,
        )
        worker.install_signal_handlers()
        worker.work(burst=settings.burst)
    finally:
        context.close()
        redis.close()
