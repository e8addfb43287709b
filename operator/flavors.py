"""Reconciling one Flavor or ClusterFlavor: its pods, its readiness, its scale.

Called by the kopf handlers on every change and on a timer. It applies the
flavor's children (server-side apply, so each tick is one idempotent request
per object), reads back what Kubernetes made of them, checks an external
endpoint, and returns a ``FlavorReport`` that the handler writes to the status.

A ClusterFlavor's children live in the release's namespace; its grants are
made real as a RoleBinding in each granted tenant's namespace, which lets the
shared model's workers write that tenant's jobs' status (and nothing
elsewhere). A RoleBinding of a namespace no ClusterFlavor grants any more is
deleted on the next resync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import httpx
from redis import Redis

from llmloom import OPERATOR, conditions, events, queues, secrets, timestamps
from llmloom.events import EventType
from llmloom.kube import (
    CLUSTER_FLAVORS,
    DEPLOYMENTS,
    FLAVORS,
    PODS,
    ROLE_BINDINGS,
    SERVICE_ACCOUNTS,
    SERVICES,
    Kube,
    KubeError,
)
from llmloom.operator import builders, scaling
from llmloom.operator.workqueue import WorkQueue
from llmloom.resources import ClusterFlavor, Flavor, QueueStatus, ReplicaStatus
from llmloom.settings import OperatorSettings
from llmloom.sharing import Catalog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readiness:
    """The flavor's Ready condition."""

    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class FlavorReport:
    """What the reconciler saw and did: everything the status shows."""

    ready: Readiness
    endpoint: str
    queue: QueueStatus
    replicas: ReplicaStatus | None = None
    selector: str | None = None
    last_scale_time: datetime | None = None
    tenants: int | None = None
    """Namespaces a shared model is granted to."""


@dataclass
class FlavorDeps:
    """Clients of the operator process that flavor reconciling uses."""

    settings: OperatorSettings
    kube: Kube
    redis: Redis
    http: httpx.AsyncClient
    probes: dict[str, tuple[float, Readiness]] = field(default_factory=dict)
    """Last endpoint check per flavor version, so endpoints are not probed every tick."""
    worker_rbac: set[str] = field(default_factory=set)
    """Namespaces whose worker ServiceAccount and RoleBinding were applied this period."""
    low_since: dict[str, datetime] = field(default_factory=dict)
    """Per flavor uid, since when its load has needed fewer pods than run (scaling.decide)."""
    catalog: Catalog | None = None
    """Flavors, shared models and namespaces from watches (a shared model's grants)."""
    shared_rbac: set[str] = field(default_factory=set)
    """Namespaces whose shared-worker RoleBinding was applied this period."""


def _served_models(provider: str, body: Any) -> set[str]:
    if provider == "ollama":
        names = {m.get("name", "") for m in body.get("models", [])}
        return names | {n.removesuffix(":latest") for n in names}
    return {m.get("id", "") for m in body.get("data", [])}


async def probe_endpoint(http: httpx.AsyncClient, flavor: Flavor, api_key: str | None) -> Readiness:
    """Ask an external endpoint which models it serves."""
    base = (flavor.spec.endpoint or "").rstrip("/")
    url = base + ("/api/tags" if flavor.spec.provider == "ollama" else "/models")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        resp = await http.get(url, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        return Readiness("False", "EndpointUnreachable", f"{url}: {exc!r}")
    if resp.status_code in (401, 403):
        return Readiness(
            "False", "Unauthorized", f"{url} answered {resp.status_code}: {resp.text[:300]}"
        )
    if resp.status_code >= 400:
        return Readiness(
            "False", "EndpointError", f"{url} answered {resp.status_code}: {resp.text[:300]}"
        )
    try:
        served = _served_models(flavor.spec.provider, resp.json())
    except (ValueError, AttributeError):
        return Readiness("False", "EndpointError", f"{url} did not answer with a model list")
    if flavor.spec.model not in served:
        listed = ", ".join(sorted(served)[:10]) or "none"
        return Readiness(
            "False",
            "ModelNotServed",
            f"{flavor.spec.model!r} is not among the models of {url}: {listed}",
        )
    return Readiness("True", "EndpointReady", f"{url} serves {flavor.spec.model!r}")


async def check_external(deps: FlavorDeps, flavor: Flavor) -> Readiness:
    """The external endpoint's readiness, re-probed every ``endpoint_check_seconds``."""
    key = f"{flavor.metadata.uid}/{flavor.metadata.generation}"
    cached = deps.probes.get(key)
    if cached is not None and time.monotonic() - cached[0] < deps.settings.endpoint_check_seconds:
        return cached[1]
    try:
        api_key = await secrets.api_key(deps.kube, flavor, deps.settings.release_namespace)
    except secrets.SecretMissing as exc:
        result = Readiness("False", "SecretMissing", str(exc))
    else:
        result = await probe_endpoint(deps.http, flavor, api_key)
    deps.probes[key] = (time.monotonic(), result)
    return result


def _unschedulable(pods: list[dict[str, Any]]) -> str | None:
    """The scheduler's message for the first pod it could not place, if any."""
    for pod in pods:
        for cond in pod.get("status", {}).get("conditions", []):
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return str(cond.get("message") or cond.get("reason") or "unschedulable")
    return None


async def reconcile(deps: FlavorDeps, flavor: Flavor, now: datetime) -> FlavorReport:
    """Bring the flavor's children in line with its spec and report what is there."""
    flavor = builders.placed(flavor, deps.settings.release_namespace)
    ns, name = flavor.metadata.namespace, flavor.metadata.name
    child = builders.child_name(flavor)
    depth = await asyncio.to_thread(queues.depth, deps.redis, ns, name, flavor.shared)
    queue = QueueStatus(pending=depth.pending, running=depth.running)
    kube, manager = deps.kube, builders.MANAGER
    if ns not in deps.worker_rbac:
        sa = builders.worker_service_account(ns, deps.settings)
        await kube.apply(SERVICE_ACCOUNTS, ns, sa, manager)
        await kube.apply(
            ROLE_BINDINGS, ns, builders.worker_role_binding(ns, deps.settings), manager
        )
        deps.worker_rbac.add(ns)
    deploy = flavor.spec.deploy
    if deploy is None:
        await kube.apply(
            DEPLOYMENTS, ns, builders.worker_deployment(flavor, deps.settings), manager
        )
        ready = await check_external(deps, flavor)
        return FlavorReport(ready=ready, endpoint=builders.endpoint(flavor), queue=queue)

    current_obj = await kube.find(DEPLOYMENTS, ns, child)
    current = int(current_obj["spec"].get("replicas", 0)) if current_obj else 0
    uid = flavor.metadata.uid
    decision = scaling.decide(
        current,
        depth.pending,
        depth.running,
        flavor.spec.concurrency,
        deploy.replicas.min,
        deploy.replicas.max,
        flavor.status.last_scale_time,
        deps.low_since.get(uid),
        now,
        deploy.scale_down_delay_seconds,
    )
    if decision.low_since is None:
        deps.low_since.pop(uid, None)
    else:
        deps.low_since[uid] = decision.low_since
    applied = await kube.apply(
        DEPLOYMENTS,
        ns,
        builders.model_deployment(flavor, deps.settings, decision.replicas),
        manager,
    )
    await kube.apply(SERVICES, ns, builders.model_service(flavor), manager)
    ready_pods = int(applied.get("status", {}).get("readyReplicas") or 0)
    replicas = ReplicaStatus(desired=decision.replicas, ready=ready_pods)
    if decision.replicas == 0:
        ready = Readiness("True", "ScaledToZero", "no pods run; the next job starts one")
    elif ready_pods > 0:
        ready = Readiness(
            "True", "ModelServerReady", f"{ready_pods} of {decision.replicas} pods ready"
        )
    else:
        pods = await kube.list(PODS, ns, builders.selector_string(flavor))
        reason = _unschedulable(pods)
        if reason is not None:
            ready = Readiness("False", "Unschedulable", reason)
        else:
            ready = Readiness(
                "False", "ModelServerStarting", f"0 of {decision.replicas} pods ready"
            )
    return FlavorReport(
        ready=ready,
        endpoint=builders.endpoint(flavor),
        queue=queue,
        replicas=replicas,
        selector=builders.selector_string(flavor),
        last_scale_time=decision.last_scale_time,
    )


async def grant(deps: FlavorDeps, flavor: ClusterFlavor) -> int:
    """Let the shared model's workers serve each tenant it is granted to (a RoleBinding in
    the tenant's namespace, applied once per resync period); how many tenants that is."""
    if deps.catalog is None:
        return 0
    tenants = deps.catalog.grantees(flavor)
    for tenant in tenants:
        if tenant not in deps.shared_rbac:
            body = builders.shared_worker_role_binding(tenant, deps.settings)
            await deps.kube.apply(ROLE_BINDINGS, tenant, body, builders.MANAGER)
            deps.shared_rbac.add(tenant)
    return len(tenants)


async def withdraw_grants(deps: FlavorDeps) -> None:
    """Delete the shared-worker RoleBindings of namespaces no shared model is granted to."""
    if deps.catalog is None or not deps.catalog.synced:
        return
    granted = {t for f in deps.catalog.shared.in_namespace("") for t in deps.catalog.grantees(f)}
    selector = f"{builders.SHARED_WORKER_LABEL}=true"
    for binding in await deps.kube.list(ROLE_BINDINGS, None, selector):
        ns = binding["metadata"]["namespace"]
        if ns not in granted:
            log.info("no shared model is granted to %s any more: removing its workers' access", ns)
            with contextlib.suppress(KubeError):
                await deps.kube.delete(ROLE_BINDINGS, ns, binding["metadata"]["name"])
            deps.shared_rbac.discard(ns)


def record(report: FlavorReport, generation: int) -> Callable[[dict[str, Any]], None]:
    """A status mutation writing a reconcile report."""

    def apply(status: dict[str, Any]) -> None:
        r = report.ready
        status["conditions"] = conditions.set_condition(
            status.get("conditions", []),
            conditions.READY,
            r.status,
            r.reason,
            r.message,
            generation,
        )
        status["observedGeneration"] = generation
        status["endpoint"] = report.endpoint
        status["queue"] = report.queue.wire()
        if report.tenants is not None:
            status["tenants"] = report.tenants
        if report.replicas is not None:
            status["replicas"] = report.replicas.wire()
            status["selector"] = report.selector
            status["lastScaleTime"] = (
                timestamps.format(report.last_scale_time) if report.last_scale_time else None
            )

    return apply


def changes(flavor: Flavor, report: FlavorReport) -> list[tuple[str, str, EventType]]:
    """Events worth posting: readiness that changed, pods added or removed."""
    out: list[tuple[str, str, EventType]] = []
    old = conditions.find([c.wire() for c in flavor.status.conditions], conditions.READY)
    r = report.ready
    if old is None or (old.get("status"), old.get("reason")) != (r.status, r.reason):
        out.append((r.reason, r.message, "Normal" if r.status == "True" else "Warning"))
    before = flavor.status.replicas.desired if flavor.status.replicas else None
    if report.replicas is not None and before is not None and before != report.replicas.desired:
        q = report.queue
        out.append(
            (
                "Scaled",
                f"model-server pods {before} -> {report.replicas.desired} "
                f"({q.pending} jobs waiting, {q.running} running)",
                "Normal",
            )
        )
    return out


class FlavorController:
    """Reconciles flavors when poked (their objects changed) and every resync period.

    A plain loop rather than a kopf timer per flavor: kopf puts a finalizer on
    every object with a timer, and a finalizer with no operator left to remove
    it blocks the deletion of the flavor and of its namespace.
    """

    def __init__(self, deps: FlavorDeps, concurrency: int = 8) -> None:
        self.deps = deps
        self._limit = asyncio.Semaphore(concurrency)
        self.queue: WorkQueue[tuple[str, str]] = WorkQueue(
            deps.settings.flavor_resync_seconds, self._all, self._handle, resync_first=True
        )
        self.reports: dict[tuple[str, str], FlavorReport] = {}
        """The last report of every flavor (for the metrics)."""
        self.errors = 0
        """Reconciles that failed, since start."""

    def poke(self, namespace: str, name: str) -> None:
        """Reconcile this flavor soon."""
        self.queue.poke((namespace, name))

    async def run(self) -> None:
        """Reconcile until cancelled: poked flavors at once, all of them every resync period."""
        await self.queue.run()

    def poke_shared(self) -> None:
        """Reconcile every shared model soon (a namespace's labels, so its grants, changed)."""
        if self.deps.catalog is not None:
            for flavor in self.deps.catalog.shared.in_namespace(""):
                self.queue.poke(("", flavor.metadata.name))

    async def _all(self) -> set[tuple[str, str]]:
        self.deps.worker_rbac.clear()  # re-applied once per period, in case of edits
        self.deps.shared_rbac.clear()
        try:
            items = await self.deps.kube.list(FLAVORS, self.deps.settings.namespace)
            items += await self.deps.kube.list(CLUSTER_FLAVORS)
            await withdraw_grants(self.deps)
        except Exception:
            log.exception("listing flavors failed")
            return set()
        live = {i["metadata"]["uid"] for i in items}
        for uid in self.deps.low_since.keys() - live:
            del self.deps.low_since[uid]
        return {(i["metadata"].get("namespace", ""), i["metadata"]["name"]) for i in items}

    async def _handle(self, key: tuple[str, str]) -> None:
        await self._one(*key)

    async def _one(self, namespace: str, name: str) -> None:
        async with self._limit:
            try:
                res = FLAVORS if namespace else CLUSTER_FLAVORS
                obj = await self.deps.kube.get(res, namespace, name)
                if obj["metadata"].get("deletionTimestamp"):
                    return
                flavor = (Flavor if namespace else ClusterFlavor).model_validate(obj)
                report = await reconcile(self.deps, flavor, datetime.now(UTC))
                if isinstance(flavor, ClusterFlavor):
                    report = replace(report, tenants=await grant(self.deps, flavor))
                await self.deps.kube.update_status(
                    res,
                    namespace,
                    name,
                    record(report, flavor.metadata.generation),
                    uid=flavor.metadata.uid,
                    current=obj,
                )
                self.reports[(namespace, name)] = report
                for reason, message, kind in changes(flavor, report):
                    await events.post(
                        self.deps.kube,
                        flavor.kind,
                        obj["metadata"],
                        reason,
                        message,
                        kind,
                        OPERATOR,
                    )
            except KubeError as exc:
                if exc.code != 404:
                    self.errors += 1
                    log.warning("reconciling flavor %s/%s failed: %s", namespace, name, exc)
                else:
                    self.reports.pop((namespace, name), None)
            except Exception:
                self.errors += 1
                log.exception("reconciling flavor %s/%s failed", namespace, name)
