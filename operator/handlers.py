"""The kopf handlers and the controllers they start: thin wrappers over the controllers.

Everything is registered on a registry built by ``build_registry`` (no global
registry), so tests and the dev stack run a fresh operator each time. kopf
runs the process (login, startup, cleanup) and watches flavors, batches and
flavors' pods; LLMJobs, the one kind made per request, the job controller
watches itself (operator/jobs.py says why).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import kopf
from redis import Redis

from llmloom import GROUP, VERSION, redisclients
from llmloom.kube import Kube, bearer, load_config
from llmloom.operator import builders
from llmloom.operator.batches import BatchController
from llmloom.operator.flavors import FlavorController, FlavorDeps
from llmloom.operator.jobs import JobController
from llmloom.resources import ClusterFlavor
from llmloom.settings import OperatorSettings
from llmloom.sharing import Catalog

log = logging.getLogger(__name__)

Body = dict[str, Any]


@dataclass
class Memo:
    """What every handler shares: the settings and the clients."""

    settings: OperatorSettings
    redis: Redis
    kube: Kube | None = None
    """The async API client; it and the controllers are made at startup, on kopf's loop."""
    flavors: FlavorController | None = None
    jobs: JobController | None = None
    batches: BatchController | None = None
    catalog: Catalog | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


async def startup(memo: Memo, **_: Any) -> None:
    """Create the async clients and the flavor controller on the operator's event loop."""
    memo.kube = Kube.connect(memo.settings.kubeconfig)
    # Flavors, shared models and namespaces' labels, from watches: admission and grants
    # read them from memory.
    memo.catalog = catalog = Catalog.watching(memo.kube, memo.settings.namespace)
    deps = FlavorDeps(
        settings=memo.settings,
        kube=memo.kube,
        redis=memo.redis,
        http=httpx.AsyncClient(),
        catalog=catalog,
    )
    memo.flavors = flavors = FlavorController(deps)

    def shared_changed(kind: str, flavor: ClusterFlavor | None) -> None:
        if flavor is not None and flavor.metadata.generation != flavor.status.observed_generation:
            flavors.poke("", flavor.metadata.name)

    catalog.shared.on_change = shared_changed
    catalog.namespaces.on_change = lambda kind, meta: flavors.poke_shared()
    catalog.start()
    memo.jobs = JobController(
        memo.settings,
        deps.kube,
        memo.redis,
        redisclients.connect_async(memo.settings.redis_url),
        catalog,
    )
    memo.tasks.append(asyncio.create_task(memo.flavors.run(), name="llmloom-flavors"))
    memo.tasks.append(asyncio.create_task(memo.jobs.run(), name="llmloom-jobs"))
    memo.batches = BatchController(memo.settings, deps.kube, memo.jobs.aredis, memo.redis, catalog)
    memo.tasks.append(asyncio.create_task(memo.batches.run(), name="llmloom-batches"))


async def cleanup(memo: Memo, **_: Any) -> None:
    for task in memo.tasks:
        task.cancel()
    await asyncio.gather(*memo.tasks, return_exceptions=True)
    if memo.catalog is not None:
        await memo.catalog.stop()
    if memo.flavors is not None:
        await memo.flavors.deps.http.aclose()
    if memo.kube is not None:
        await memo.kube.aclose()
    if memo.jobs is not None:
        await memo.jobs.aredis.aclose()


# Every handler is async: kopf runs sync ones in threads, and the controllers' state
# (their dicts, asyncio events) belongs to the event loop.
async def batch_event(body: kopf.Body, type: str | None, memo: Memo, **_: Any) -> None:
    """Keep the batch controller's view of batches current."""
    if memo.batches is not None:
        memo.batches.observe(type, body)


async def flavor_changed(body: kopf.Body, memo: Memo, **_: Any) -> None:
    """A flavor's spec changed (or it appeared): reconcile it now."""
    meta, status = body.get("metadata", {}), body.get("status", {})
    if memo.flavors is not None and meta.get("generation") != status.get("observedGeneration"):
        memo.flavors.poke(meta["namespace"], meta["name"])


async def child_changed(body: kopf.Body, memo: Memo, **_: Any) -> None:
    """A flavor's Deployment or pod changed (readiness, scheduling): look at the flavor again."""
    labels = body.get("metadata", {}).get("labels", {})
    if memo.flavors is None:
        return
    if labels.get(builders.FLAVOR_LABEL):
        memo.flavors.poke(body["metadata"]["namespace"], labels[builders.FLAVOR_LABEL])
    elif labels.get(builders.SHARED_LABEL):
        memo.flavors.poke("", labels[builders.SHARED_LABEL])


def login(settings: OperatorSettings) -> Callable[..., kopf.ConnectionInfo]:
    """A login handler using the same kubeconfig resolution as the other components."""

    def handler(**_: Any) -> kopf.ConnectionInfo:
        cfg = load_config(settings.kubeconfig)
        header = bearer(cfg) or ""
        scheme, _sep, value = header.partition(" ")
        return kopf.ConnectionInfo(
            server=cfg.host,
            ca_path=cfg.ssl_ca_cert,
            insecure=not cfg.verify_ssl,
            certificate_path=cfg.cert_file,
            private_key_path=cfg.key_file,
            scheme=scheme or None,
            token=value or None,
        )

    return handler


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    """A registry holding every LLMLoom handler."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(login(settings))
    kopf.on.startup(registry=registry)(startup)
    kopf.on.cleanup(registry=registry)(cleanup)
    # kopf's handler protocols know nothing of index arguments (``flavors``), hence the ignores.
    # LLMJobs are not kopf's: the job controller watches them itself (operator/jobs.py).
    # Watch-event handlers need no finalizer: objects stay deletable without the operator.
    kopf.on.event(GROUP, VERSION, "flavors", registry=registry)(flavor_changed)
    kopf.on.event(GROUP, VERSION, "llmbatches", registry=registry)(batch_event)
    for group_version, plural in (("apps/v1", "deployments"), ("v1", "pods")):
        for label in (builders.FLAVOR_LABEL, builders.SHARED_LABEL):
            kopf.on.event(
                group_version,
                plural,
                labels={label: kopf.PRESENT},
                id=f"child_changed/{label}",
                registry=registry,
            )(child_changed)
    return registry
