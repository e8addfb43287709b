"""Assembles a worker process: context, queues, and RQ's worker loop."""

from __future__ import annotations

from pathlib import Path

from redis import Redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from llmloom import queues, tokens
from llmloom.kube import FLAVORS
from llmloom.resources import Flavor
from llmloom.settings import WorkerSettings
from llmloom.worker import tasks
from llmloom.worker.deps import Deps
from llmloom.worker.readiness import wait_for_model

MODEL_LOAD_SECONDS = 3600.0
"""How long a worker waits for its model server to load or pull the model."""


async def _wait_for_model(deps: Deps, settings: WorkerSettings) -> None:
    namespace, _, name = settings.queues[0].partition("/")
    flavor = Flavor.model_validate(await deps.kube.get(FLAVORS, namespace, name))
    endpoint = settings.endpoint or flavor.spec.endpoint
    if endpoint is None:
        raise SystemExit(f"Flavor {name!r} has no endpoint and LLMLOOM_ENDPOINT is not set")
    await wait_for_model(
        deps.http, flavor.spec.provider, endpoint, flavor.spec.model, MODEL_LOAD_SECONDS
    )


def run(settings: WorkerSettings) -> None:
    """Take jobs from the configured queues until stopped (or empty, in burst mode)."""
    if not settings.queues:
        raise SystemExit("no queues to work on: pass --queue NAMESPACE/FLAVOR")
    tokens.prepare_offline_cache()
    context = tasks.Context(settings)
    tasks.install(context)
    redis = Redis.from_url(settings.redis_url)
    try:
        if settings.wait_for_model:
            context.call(_wait_for_model(context.deps, settings))
        if settings.ready_file:
            Path(settings.ready_file).touch()
        # SimpleWorker runs jobs in this process: the context's connections stay
        # warm, and a job costs no fork.
        worker = SimpleWorker(
            [
                queues.queue(name, redis)
                for flavor_queue in settings.queues
                for name in queues.queue_names(flavor_queue)
            ],
            connection=redis,
            serializer=JSONSerializer,
        )
        worker.work(burst=settings.burst, with_scheduler=False, logging_level=settings.log_level)
    finally:
        tasks.install(None)
        context.close()
