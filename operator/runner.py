"""Configures kopf for LLMLoom and runs the operator (in the foreground or a thread)."""

from __future__ import annotations

import asyncio
import logging
import threading

import kopf
from redis import Redis

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
    ks.watching.server_timeout = 300
    ks.watching.client_timeout = 330
    return ks


def _kwargs(settings: OperatorSettings, memo: Memo) -> dict[str, object]:
    return {
        "registry": build_registry(settings),
        "settings": kopf_settings(settings),
        "memo": memo,
        "standalone": True,
        "clusterwide": settings.namespace is None,
        "namespaces": [settings.namespace] if settings.namespace else [],
    }


def _memo(settings: OperatorSettings) -> Memo:
    return Memo(settings=settings, redis=Redis.from_url(settings.redis_url))


def run(settings: OperatorSettings) -> None:
    """Run the operator until it is interrupted."""
    memo = _memo(settings)
    stop_metrics = metrics.serve(settings.metrics_port, lambda: (memo.flavors, memo.jobs))
    try:
        kopf.run(**_kwargs(settings, memo))  # type: ignore[arg-type]
    finally:
        stop_metrics()


class OperatorThread:
    """The operator in a background thread, for the tests."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self._fresh()

    def _fresh(self) -> None:
        self.ready = threading.Event()
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._main, name="llmloom-operator", daemon=True)

    def _main(self) -> None:
        memo = _memo(self.settings)
        stop_metrics = metrics.serve(self.settings.metrics_port, lambda: (memo.flavors, memo.jobs))
        try:
            asyncio.run(
                kopf.operator(
                    ready_flag=self.ready,
                    stop_flag=self.stop_flag,
                    **_kwargs(self.settings, memo),  # type: ignore[arg-type]
                )
            )
        finally:
            stop_metrics()
            memo.redis.close()

    def start(self, timeout: float = 30.0) -> OperatorThread:
        self.thread.start()
        if not self.ready.wait(timeout):
            raise RuntimeError("the operator did not become ready")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_flag.set()
        self.thread.join(timeout)

    def restart(self) -> None:
        """Stop and start again, as a crash and a new pod would (state in memory is lost)."""
        self.stop()
        self._fresh()
        self.start()
