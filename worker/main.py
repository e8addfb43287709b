"""Assembles a worker process: context, queues, and RQ's worker loop."""

from __future__ import annotations

from redis import Redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from llmloom import queues, tokens
from llmloom.settings import WorkerSettings
from llmloom.worker import tasks


def run(settings: WorkerSettings) -> None:
    """Take jobs from the configured queues until stopped (or empty, in burst mode)."""
    if not settings.queues:
        raise SystemExit("no queues to work on: pass --queue NAMESPACE/FLAVOR")
    tokens.prepare_offline_cache()
    context = tasks.Context(settings)
    tasks.install(context)
    redis = Redis.from_url(settings.redis_url)
    try:
        # SimpleWorker runs jobs in this process: the context's connections stay
        # warm, and a job costs no fork.
        worker = SimpleWorker(
            [queues.queue(name, redis) for name in settings.queues],
            connection=redis,
            serializer=JSONSerializer,
        )
        worker.work(burst=settings.burst, with_scheduler=False, logging_level=settings.log_level)
    finally:
        tasks.install(None)
        context.close()
