"""The kopf handlers: thin wrappers that read, call a pure decision, and write.

Everything is registered on a registry built by ``build_registry`` (no global
registry), so tests and the dev stack run a fresh operator each time.
Status is written through ``patch.fns``: kopf applies those to the freshest
object with a resourceVersion check, so a condition the worker wrote in the
meantime is never overwritten.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import kopf
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from llmloom import (
    GROUP,
    OPERATOR,
    VERSION,
    conditions,
    events,
    origin,
    queues,
    timestamps,
)
from llmloom.events import EventType
from llmloom.kube import Kube, bearer, load_config
from llmloom.operator import builders
from llmloom.operator.admission import Admission, admit
from llmloom.operator.batches import BatchController
from llmloom.operator.flavors import FlavorController, FlavorDeps
from llmloom.operator.jobs import JobController
from llmloom.resources import Flavor, LLMJob
from llmloom.settings import OperatorSettings

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
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


async def startup(memo: Memo, **_: Any) -> None:
    """Create the async clients and the flavor controller on the operator's event loop."""
    memo.kube = Kube.connect(memo.settings.kubeconfig)
    deps = FlavorDeps(
        settings=memo.settings,
        kube=memo.kube,
        redis=memo.redis,
        http=httpx.AsyncClient(),
    )
    memo.flavors = FlavorController(deps)
    memo.jobs = JobController(
        memo.settings, deps.kube, memo.redis, AsyncRedis.from_url(memo.settings.redis_url)
    )
    memo.tasks.append(asyncio.create_task(memo.flavors.run(), name="llmloom-flavors"))
    memo.tasks.append(asyncio.create_task(memo.jobs.run(), name="llmloom-jobs"))
    memo.batches = BatchController(memo.settings, deps.kube, memo.jobs.aredis, memo.redis)
    memo.tasks.append(asyncio.create_task(memo.batches.run(), name="llmloom-batches"))


async def cleanup(memo: Memo, **_: Any) -> None:
    for task in memo.tasks:
        task.cancel()
    await asyncio.gather(*memo.tasks, return_exceptions=True)
    if memo.flavors is not None:
        await memo.flavors.deps.http.aclose()
    if memo.kube is not None:
        await memo.kube.aclose()
    if memo.jobs is not None:
        await memo.jobs.aredis.aclose()


# Every handler is async: kopf runs sync ones in threads, and the controllers' state
# (their dicts, asyncio events) belongs to the event loop.
async def job_event(body: kopf.Body, type: str | None, memo: Memo, **_: Any) -> None:
    """Keep the job controller's view of jobs current."""
    if memo.jobs is not None:
        gone = memo.jobs.observe(type, body)
        if gone is not None:
            await asyncio.to_thread(memo.jobs.forget, gone)


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
    name = body.get("metadata", {}).get("labels", {}).get(builders.FLAVOR_LABEL)
    if memo.flavors is not None and name:
        memo.flavors.poke(body["metadata"]["namespace"], name)


def record_admission(adm: Admission, generation: int) -> Callable[[kopf.RawBody], None]:
    """A patch function writing an admission into the freshest job body."""

    def apply(raw: kopf.RawBody) -> None:
        body = cast(Body, raw)
        if body.get("metadata", {}).get("generation") != generation:
            return  # the spec moved on; the newer version gets its own admission
        status = body.setdefault("status", {})
        conds = [
            c
            for c in status.get("conditions", [])
            # A finished condition of an older spec version no longer describes the job.
            if c.get("type") not in (conditions.SUCCEEDED, conditions.FAILED)
            or c.get("observedGeneration") == generation
        ]
        if adm.action == "reject":
            conds = conditions.set_condition(
                conds, conditions.ACCEPTED, "False", adm.reason, adm.message, generation
            )
            conds = conditions.set_condition(
                conds, conditions.FAILED, "True", adm.reason, adm.message, generation
            )
            status["completionTime"] = timestamps.now()
        elif adm.action == "suspend":
            conds = conditions.set_condition(
                conds, conditions.SUSPENDED, "True", adm.reason, adm.message, generation
            )
        else:
            state = "True" if adm.action == "enqueue" else "False"
            conds = conditions.set_condition(
                conds, conditions.ACCEPTED, state, adm.reason, adm.message, generation
            )
        if adm.action != "suspend" and conditions.find(conds, conditions.SUSPENDED):
            conds = conditions.set_condition(
                conds, conditions.SUSPENDED, "False", "Resumed", "spec.suspend is false", generation
            )
        if not conditions.finished(conds, generation) or adm.action == "reject":
            status["message"] = adm.message
        status["conditions"] = conds
        status["state"] = conditions.job_state(conds, running=status.get("state") == "Running")
        status["observedGeneration"] = generation

    return apply


def _age_seconds(meta: kopf.Meta) -> float:
    created = timestamps.epoch(meta.get("creationTimestamp"))
    return 0.0 if created is None else time.time() - created


def flavors(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], Body]:
    """Index of flavors by (namespace, name), kept in memory by kopf."""
    return {(namespace or "", name): dict(body)}


async def admit_job(
    body: kopf.Body,
    meta: kopf.Meta,
    patch: kopf.Patch,
    flavors: kopf.Index[tuple[str, str], Body],
    memo: Memo,
    **_: Any,
) -> None:
    """Validate a job version against its flavor and enqueue it."""
    job = LLMJob.model_validate(dict(body))
    found = flavors.get((job.metadata.namespace, job.spec.flavor))
    flavor = Flavor.model_validate(next(iter(found))) if found else None
    adm = admit(job, flavor, _age_seconds(meta), memo.settings.flavor_grace_seconds)
    if adm.action == "skip":
        return
    gen = job.metadata.generation
    already = conditions.is_true(
        [c.wire() for c in job.status.conditions], conditions.ACCEPTED, gen
    )
    if adm.action == "enqueue":
        assert flavor is not None
        if await asyncio.to_thread(queues.enqueue_job, memo.redis, job, flavor):
            log.info(
                "%s/%s: enqueued generation %d: %s", meta.namespace, meta.name, gen, adm.message
            )
    patch.fns.append(record_admission(adm, gen))
    if adm.action == "wait":
        raise kopf.TemporaryError(adm.message, delay=min(5.0, memo.settings.flavor_grace_seconds))
    if adm.action == "reject":
        log.warning("%s/%s: rejected: %s", meta.namespace, meta.name, adm.message)
    routine = adm.action == "enqueue" and (already or not origin.routine_events(dict(meta)))
    if memo.kube is not None and not routine:
        kind: EventType = "Warning" if adm.action == "reject" else "Normal"
        reason = "Accepted" if adm.action == "enqueue" else adm.reason
        await events.post(memo.kube, "LLMJob", dict(meta), reason, adm.message, kind, OPERATOR)


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
    kopf.index(GROUP, VERSION, "flavors", registry=registry)(flavors)
    # A request's job is admitted and enqueued by the API and written by its worker: kopf's
    # admission handlers (and their annotation and status writes) leave it alone; the job
    # controller still watches it (recovery, deadline, deletion after delivery).
    people = {origin.LABEL: kopf.ABSENT}
    api_made = {origin.LABEL: origin.API}
    for labels in (people, api_made):
        for decorator in (
            kopf.on.resume(GROUP, VERSION, "llmjobs", labels=labels, registry=registry),
            kopf.on.create(GROUP, VERSION, "llmjobs", labels=labels, registry=registry),
            kopf.on.update(
                GROUP, VERSION, "llmjobs", field="spec", labels=labels, registry=registry
            ),
        ):
            decorator(admit_job)  # type: ignore[arg-type]
    # Watch-event handlers need no finalizer: objects stay deletable without the operator.
    kopf.on.event(GROUP, VERSION, "llmjobs", registry=registry)(job_event)
    kopf.on.event(GROUP, VERSION, "flavors", registry=registry)(flavor_changed)
    kopf.on.event(GROUP, VERSION, "llmbatches", registry=registry)(batch_event)
    for group_version, plural in (("apps/v1", "deployments"), ("v1", "pods")):
        kopf.on.event(
            group_version, plural, labels={builders.FLAVOR_LABEL: kopf.PRESENT}, registry=registry
        )(child_changed)
    return registry
