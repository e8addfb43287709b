"""Configures kopf for LLMLoom and runs the operator until it is stopped."""

from __future__ import annotations

import logging
import threading

import kopf
import uvloop

from llmloom import redisclients
from llmloom.operator import metrics
from llmloom.operator.handlers import Memo, build_registry
from llmloom.settings import OperatorSettings


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    """Kopf's settings with LLMLoom's names instead of kopf's own."""
    ks = kopf.OperatorSettings()
    ks.persistence.finalizer = "llmloom.io/finalizer"
    ks.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="llmloom.io")
    ks.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="llmloom.io", key="last-handled-configuration"
    )
    # Kubernetes Events for every handler run would flood `kubectl describe`.
    ks.posting.level = logging.WARNING
    # The CRDs are the chart's, installed before the operator starts: no need to watch
    # CRDs for new ones, which needs a cluster-wide grant the operator does not have
    # (without this, kopf retries the forbidden list at every start and logs errors).
    ks.scanning.disabled = True
    ks.watching.server_timeout = 300
    ks.watching.client_timeout = 330
    return ks


async def operate(
    settings: OperatorSettings,
    ready_flag: threading.Event | None = None,
    stop_flag: threading.Event | None = None,
) -> None:
    """Run the operator on the current event loop until ``stop_flag`` is set (or, without
    one, until the process is signalled); ``ready_flag`` is set once it watches."""
    # kopf logs every handler run at INFO ("Handler 'job_event' succeeded."): a few lines
    # per job, thousands a minute under load. LLMLoom's own lines say what happened.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    memo = Memo(settings=settings, redis=redisclients.connect(settings.redis_url))
    stop_metrics = metrics.serve(
        settings.metrics_host, settings.metrics_port, lambda: (memo.flavors, memo.jobs)
    )
    try:
        await kopf.operator(
            registry=build_registry(settings),
            settings=kopf_settings(settings),
            memo=memo,
            standalone=True,
            clusterwide=settings.namespace is None,
            namespaces=[settings.namespace] if settings.namespace else [],
            ready_flag=ready_flag,
            stop_flag=stop_flag,
            liveness_endpoint=(
                f"http://{settings.liveness_host}:{settings.liveness_port}/healthz"
                if settings.liveness_port
                else None
            ),
        )
    finally:
        stop_metrics()
        memo.redis.close()


def run(settings: OperatorSettings) -> None:
    """Run the operator in the foreground until it is interrupted (SIGINT, SIGTERM)."""
    uvloop.run(operate(settings))
