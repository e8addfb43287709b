"""Prometheus metrics of the operator, read from its controllers at scrape time.

``llmloom_jobs{namespace,state}``: jobs by state; ``llmloom_queue_pending`` and
``llmloom_queue_running{namespace,flavor}``: queue depth per flavor;
``llmloom_flavor_replicas{namespace,flavor,kind}``: desired and ready
model-server pods; ``llmloom_reconcile_errors_total{controller}``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmloom.operator.flavors import FlavorController
from llmloom.operator.jobs import JobController

JOB_STATES = ("Pending", "Queued", "Running", "Suspended", "Succeeded", "Failed")


class OperatorCollector(Collector):
    """Turns the controllers' in-memory view into metrics."""

    def __init__(
        self, controllers: Callable[[], tuple[FlavorController | None, JobController | None]]
    ):
        self.controllers = controllers

    def collect(self) -> Iterator[Metric]:
        flavors, jobs = self.controllers()
        by_state = GaugeMetricFamily("llmloom_jobs", "Jobs by state", labels=["namespace", "state"])
        counts = Counter((j.namespace, j.state) for j in (jobs.jobs.values() if jobs else []))
        for namespace in sorted({ns for ns, _ in counts}):
            for state in JOB_STATES:
                by_state.add_metric([namespace, state], counts.get((namespace, state), 0))
        yield by_state
        pending = GaugeMetricFamily(
            "llmloom_queue_pending",
            "Jobs waiting in a flavor's queue",
            labels=["namespace", "flavor"],
        )
        running = GaugeMetricFamily(
            "llmloom_queue_running",
            "Jobs running from a flavor's queue",
            labels=["namespace", "flavor"],
        )
        replicas = GaugeMetricFamily(
            "llmloom_flavor_replicas",
            "Model-server pods of a flavor",
            labels=["namespace", "flavor", "kind"],
        )
        for (ns, name), report in sorted((flavors.reports if flavors else {}).items()):
            pending.add_metric([ns, name], report.queue.pending)
            running.add_metric([ns, name], report.queue.running)
            if report.replicas is not None:
                replicas.add_metric([ns, name, "desired"], report.replicas.desired)
                replicas.add_metric([ns, name, "ready"], report.replicas.ready)
        yield from (pending, running, replicas)
        errors = CounterMetricFamily(
            "llmloom_reconcile_errors", "Reconciles that failed", labels=["controller"]
        )
        errors.add_metric(["flavors"], flavors.errors if flavors else 0)
        errors.add_metric(["jobs"], jobs.errors if jobs else 0)
        yield errors


def serve(
    host: str,
    port: int,
    controllers: Callable[[], tuple[FlavorController | None, JobController | None]],
) -> Callable[[], None]:
    """Serve /metrics on the address (port 0: not at all); returns the function that stops
    it. A port in use is an error that names it, not a traceback of the HTTP server's."""
    registry = CollectorRegistry()
    registry.register(OperatorCollector(controllers))
    if not port:
        return lambda: None
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise SystemExit(
            f"the operator's metrics port {host}:{port} is not free ({exc.strerror}): "
            "set LLMLOOM_METRICS_PORT to another port, or 0 for none"
        ) from exc

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop
