"""Turning requests into LLMJob resources, and their outcomes into answers.

A request's model is found among the tenant's flavors in a watch cache (no
API-server request). It is admitted (the tenant's and the flavor's rate
limits, the tenant's token budget: ``admission``), its body is stored beside
the results (``llmloom.bodies``), and it becomes an LLMJob that refers to it:
one create, the only API-server request the API makes for it. The API
enqueues the job with its spec, so neither the operator nor the worker reads
it; the worker writes its status once; the operator deletes it once its
answer has been delivered (``ttlSecondsAfterFinished``), while its task stays
readable from Redis (``results.TaskRecord``). When the job finishes, its
estimated tokens are settled with the ones the provider counted.

Jobs made through ``/v1/jobs`` (``submit``) keep their spec inline and stay,
as a person's do.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Header, Query
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from llmloom import (
    API_VERSION,
    bodies,
    conditions,
    ollama,
    origin,
    queues,
    ratelimit,
    responses,
    results,
    timestamps,
    wire,
)
from llmloom.api import admission, streaming
from llmloom.api.admission import Admission
from llmloom.api.deps import ServicesDep
from llmloom.api.errors import APIError
from llmloom.api.errors import responses as documented_errors
from llmloom.api.observability import PROVIDER_MS
from llmloom.api.protocol import SSE_EVENT, TaskInfo, TaskQueued
from llmloom.api.services import Services
from llmloom.kube import LLMJOBS, KubeError, Obj, Resource, is_name
from llmloom.resources import Endpoint, Flavor, LLMJob, LLMJobSpec


async def find(services: Services, res: Resource, namespace: str, name: str) -> Obj | None:
    """An object of the tenant by name; None when there is none (or cannot be one)."""
    return await services.kube.find(res, namespace, name) if is_name(name) else None


async def delete_job(services: Services, namespace: str, name: str) -> bool:
    """Delete (and so cancel) a tenant's job; False when it was gone already."""
    try:
        await services.kube.delete(LLMJOBS, namespace, name)
    except KubeError as exc:
        if exc.code == 404:
            return False
        raise
    return True


def resolve_flavor(services: Services, namespace: str, model: str) -> Flavor:
    """The tenant's flavor for a requested model, from the watch caches: its own Flavor by
    name or model id, else a ClusterFlavor granted to it (``llmloom.sharing``)."""
    found = services.catalog.for_model(namespace, model)
    if found is not None:
        return found
    raise APIError(
        404,
        f"The model '{model}' does not exist or you do not have access to it.",
        "invalid_request_error",
        param="model",
        code="model_not_found",
    )


# A flavor that runs its own model server and whose pods no node can take cannot
# answer: the request would wait for a GPU that is not there.
UNAVAILABLE_REASONS = frozenset({"Unschedulable"})
UNAVAILABLE_RETRY_SECONDS = 30


def unavailable_reason(flavor: Flavor) -> str | None:
    """Why a flavor cannot serve a request now ("Reason: message"), or None if it can (or
    may: unknown readiness, a model server starting, scaled to zero)."""
    if flavor.spec.deploy is None:
        return None
    ready = conditions.find([c.wire() for c in flavor.status.conditions], conditions.READY)
    if ready is None or ready.get("status") != "False":
        return None
    if ready.get("reason") not in UNAVAILABLE_REASONS:
        return None
    seen = ready.get("observedGeneration")
    if seen is not None and seen != flavor.metadata.generation:
        return None  # a verdict on an older spec
    return f"{ready.get('reason')}: {ready.get('message', '')}".rstrip(": ")


def ensure_available(services: Services, namespace: str, flavor: Flavor) -> None:
    """503 when neither the flavor nor any of its failover flavors can serve now."""
    reason = unavailable_reason(flavor)
    if reason is None:
        return
    for name in flavor.spec.failover_flavors:
        found = services.catalog.named(namespace, name, within=flavor)
        if found is not None and unavailable_reason(found) is None:
            return
    raise APIError(
        503,
        f"The model '{flavor.metadata.name}' cannot serve requests now ({reason}). "
        "Please try again later.",
        "server_error",
        code="service_unavailable",
        headers={"Retry-After": str(UNAVAILABLE_RETRY_SECONDS)},
    )


async def settle(
    services: Services, uid: str, version: int, outcome: results.Outcome | None = None
) -> None:
    """Charge a finished job's tokens in place of its estimate, once (whichever waiter or
    API replica comes first), and count them in the metrics."""
    charge = await ratelimit.claim(services.redis, uid, version)
    if charge is None:
        return
    outcome = outcome or await results.load(services.redis, uid, version)
    if outcome is None:  # not finished after all: keep the charge for later
        await ratelimit.hold(
            services.redis, uid, version, charge, services.settings.result_ttl_seconds
        )
        return
    prompt, completion = ratelimit.spent(outcome.usage)
    cost = ratelimit.cost_micros(outcome.usage)
    redis = services.redis
    settled = await ratelimit.apply(redis, charge, prompt, completion, outcome.flavor, cost)
    services.metrics.count_tokens(settled.tenant, settled.flavor, prompt, completion, cost)


async def submit(
    services: Services,
    namespace: str,
    flavor: Flavor,
    spec: LLMJobSpec,
    prefix: str,
    name: str | None = None,
    admission: Admission | None = None,
) -> LLMJob:
    """Create the LLMJob (named, or with a generated name) and put it on its flavor's queue;
    an admitted request's charge waits for the job to finish."""
    metadata: dict[str, Any] = {"labels": {origin.LABEL: origin.API}}
    metadata.update({"name": name} if name else {"generateName": prefix})
    body = {"apiVersion": API_VERSION, "kind": "LLMJob", "metadata": metadata, "spec": spec.wire()}
    try:
        job = LLMJob.model_validate(await services.kube.create(LLMJOBS, namespace, body))
    except Exception as exc:
        if admission is not None:  # no job, no tokens: give the estimate back
            await ratelimit.apply(services.redis, admission.charge, 0, 0)
        if isinstance(exc, KubeError) and exc.code == 409:
            raise APIError(
                409, exc.message, "invalid_request_error", code="already_exists"
            ) from exc
        if isinstance(exc, KubeError) and exc.code in (400, 422):
            raise APIError(
                400, exc.message, "invalid_request_error", code="invalid_request"
            ) from exc
        raise
    uid, version = job.metadata.uid, job.metadata.generation
    if admission is not None:
        ttl = services.settings.result_ttl_seconds
        await ratelimit.hold(services.redis, uid, version, admission.charge, ttl)
        # The operator enqueues too: a fast worker may have finished before the hold, and
        # its announcement found nothing to settle.
        if await services.redis.exists(results.result_key(uid, version)):
            await settle(services, uid, version)
    await asyncio.to_thread(queues.enqueue_job, services.sync_redis, job, flavor)
    return job


@dataclass(frozen=True)
class Submitted:
    """A request's job, and the waiter's registration for its answer (when it waits)."""

    job: LLMJob
    answered: asyncio.Event | None


async def submit_request(
    services: Services,
    namespace: str,
    flavor: Flavor,
    endpoint: Endpoint,
    raw: bytes,
    stream: bool,
    admitted: Admission,
) -> Submitted:
    """The LLMJob of one OpenAI request: the job created (the one API-server request), then
    in one Redis round trip its body stored by reference, its charge held, its task kept
    and the job put on its flavor's queue with its spec.

    The waiter registers before the job is queued, so the answer, however fast, is not
    missed and need not be looked for first. Should the API stop between the create and
    the queue, the operator queues the job and it fails with RequestLost: the client,
    whose connection went with the API, sees the reason in the task.
    """
    settings, redis = services.settings, services.redis
    ref = bodies.reference(endpoint, raw)
    spec = LLMJobSpec(
        flavor=flavor.metadata.name,
        task="embeddings" if endpoint == wire.EMBEDDINGS else "chat",
        request=ref,
        stream=stream,
        ttl_seconds_after_finished=settings.request_job_ttl_seconds,
    )
    prefix = {
        wire.CHAT: "chat-",
        wire.COMPLETIONS: "cmpl-",
        wire.RESPONSES: "resp-",
        wire.EMBEDDINGS: "embed-",
    }[endpoint]
    body = {
        "apiVersion": API_VERSION,
        "kind": "LLMJob",
        "metadata": {"generateName": prefix, "labels": {origin.LABEL: origin.REQUEST}},
        "spec": spec.wire(),
    }
    try:
        job = LLMJob.model_validate(await services.kube.create(LLMJOBS, namespace, body))
    except BaseException:
        await ratelimit.apply(redis, admitted.charge, 0, 0)  # no job, no tokens
        raise
    meta = job.metadata
    record = results.TaskRecord(
        uid=meta.uid,
        generation=meta.generation,
        created=int(timestamps.epoch(meta.creation_timestamp) or time.time()),
        flavor=flavor.metadata.name,
    )
    answered = None if stream else services.waiter.register(meta.uid, meta.generation)
    ttl = settings.result_ttl_seconds
    try:
        async with redis.pipeline(transaction=False) as pipe:
            await bodies.store(pipe, ref, raw, ttl)
            await ratelimit.hold(pipe, meta.uid, meta.generation, admitted.charge, ttl)
            await results.remember_task(pipe, namespace, meta.name, record, ttl)
            queues.stage(pipe, queues.work_of(job, flavor))
            await pipe.execute()
    except BaseException:
        if answered is not None:
            services.waiter.unregister(meta.uid, meta.generation, answered)
        raise
    return Submitted(job, answered)


def check_wire(flavor: Flavor, endpoint: Endpoint, body: Callable[[], dict[str, Any]]) -> None:
    """400, naming the field, for a request the flavor's server cannot be asked (Ollama's
    native API has no words for some of the OpenAI API's); never a silent drop."""
    if flavor.spec.provider != "ollama":
        return
    model = flavor.spec.model
    try:
        if endpoint == wire.CHAT:
            ollama.chat_request(body(), model, stream=False)
        elif endpoint == wire.EMBEDDINGS:
            ollama.embed_request(body(), model)
        elif endpoint == wire.RESPONSES:
            ollama.chat_request(responses.to_chat(body()), model, stream=False)
    except (ollama.Untranslatable, responses.Unsupported) as exc:
        raise APIError(
            400,
            f"The model '{flavor.metadata.name}' is served by Ollama, which cannot take "
            f"'{exc.param}': {exc.message}",
            param=exc.param,
            code="unsupported_parameter",
        ) from exc


async def serve(
    services: Services,
    tenant: str,
    endpoint: Endpoint,
    model: str,
    raw: bytes,
    stream: bool = False,
    include_usage: bool = False,
    wait_seconds: float = 0.0,
    shape: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Response:
    """One OpenAI request, whole: its flavor, the checks, admission, its job, and the
    answer (or the stream, or 202 with its task)."""
    flavor = resolve_flavor(services, tenant, model)
    needed = "embeddings" if endpoint == wire.EMBEDDINGS else "chat"
    if needed not in flavor.spec.capabilities:
        does = "do embeddings" if needed == "embeddings" else "support chat"
        raise APIError(
            400, f"The model '{model}' does not {does}.", param="model", code="model_not_supported"
        )
    ensure_available(services, tenant, flavor)
    parsed: list[dict[str, Any]] = []

    def body() -> dict[str, Any]:
        if not parsed:
            parsed.append(json.loads(raw))
        return parsed[0]

    check_wire(flavor, endpoint, body)
    admitted = await admission.admit(
        services, tenant, flavor, lambda: admission.estimate(flavor, endpoint, body())
    )
    submitted = await submit_request(services, tenant, flavor, endpoint, raw, stream, admitted)
    job = submitted.job
    if stream:
        return StreamingResponse(
            streaming.relay(services, job, endpoint, include_usage),
            media_type="text/event-stream",
            headers={**admitted.headers, TASK_HEADER: job.metadata.name},
        )
    return await respond(services, job, wait_seconds, shape, admitted.headers, submitted.answered)


TASK_HEADER = "X-LLMLoom-Task"
WAIT_HEADER = "X-LLMLoom-Wait"


async def respond(
    services: Services,
    job: LLMJob,
    wait_seconds: float,
    shape: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    answered: asyncio.Event | None = None,
) -> JSONResponse:
    """Wait for the job's answer: the OpenAI response (through ``shape``), its error, or
    past the wait, 202 with the task to poll; every answer carries ``headers``.
    ``answered``: the waiter's registration, made before the job was queued."""
    extra = headers or {}
    headers = {**extra, TASK_HEADER: job.metadata.name}
    outcome = await services.waiter.wait(
        job.metadata.uid, job.metadata.generation, wait_seconds, answered
    )
    if outcome is None:
        location = f"/v1/tasks/{job.metadata.name}"
        body = {
            "id": job.metadata.name,
            "object": "llmloom.task",
            "status": "queued",
            "location": location,
        }
        return JSONResponse(body, 202, headers={**headers, "Location": location})
    await settle(services, job.metadata.uid, job.metadata.generation, outcome)
    if outcome.provider_ms is not None:
        headers[PROVIDER_MS] = str(outcome.provider_ms)
    try:
        response = raise_for_outcome(outcome)
    except APIError as exc:
        exc.headers = {**extra, **(exc.headers or {})}
        raise
    return JSONResponse(shape(response) if shape else response, headers=headers)


def documented(
    answer: type[BaseModel], what: str, streamed: bool = True
) -> dict[int | str, dict[str, Any]]:
    """The answers an OpenAI endpoint documents: ``answer`` (or, with ``stream: true``,
    server-sent events), 202 with a task to poll, and its errors."""
    ok: dict[str, Any] = {"model": answer, "description": what}
    if streamed:
        ok = {
            "description": what + "; with stream: true, server-sent events",
            "content": {
                "application/json": {"schema": answer.model_json_schema()},
                "text/event-stream": {"schema": SSE_EVENT},
            },
        }
    return {
        200: ok,
        202: {"model": TaskQueued, "description": "Still running: poll the task"},
        **documented_errors(400, 401, 404, 413, 429, 502, 503, 504),
    }


async def _wait_seconds(
    services: ServicesDep,
    wait_header: Annotated[str | None, Header(alias=WAIT_HEADER)] = None,
    wait: Annotated[float | None, Query(ge=0)] = None,
) -> float:
    return wait_limit(services, wait_header, wait)


WaitDep = Annotated[float, Depends(_wait_seconds)]
"""How long a request waits for its answer: ``?wait=``, the X-LLMLoom-Wait header, or the
default, capped."""


def wait_limit(services: Services, header: str | None, query: float | None) -> float:
    """How long to wait for a result: query parameter, header, or the default, capped."""
    raw: Any = query if query is not None else header
    if raw is None:
        return services.settings.wait_seconds
    try:
        value = float(raw)
    except ValueError:
        raise APIError(400, "wait must be a number of seconds", param="wait") from None
    if math.isnan(value):
        raise APIError(400, "wait must be a number of seconds", param="wait")
    if value < 0:
        raise APIError(400, "wait must not be negative", param="wait")
    return min(value, services.settings.max_wait_seconds)


def raise_for_outcome(outcome: results.Outcome) -> dict[str, Any]:
    """The response of a succeeded job, or the APIError of a failed one."""
    if outcome.ok and outcome.response is not None:
        return outcome.response
    err = outcome.error or results.ErrorInfo(reason="Unknown", message="the job failed")
    raise APIError(err.status_code, err.message, err.type, code=err.reason)


async def request_task(
    services: Services, record: results.TaskRecord, name: str, outcome: results.Outcome | None
) -> TaskInfo:
    """The task view of a request from Redis alone: its record, its outcome, and whether a
    worker has started it (RQ's record of the attempt)."""
    status = "queued"
    if outcome is None:
        rq_id = queues.JobRef(
            namespace="", name=name, uid=record.uid, generation=record.generation
        ).rq_id
        started = await services.redis.hget(f"rq:job:{rq_id}", "status")
        if started in (b"started", "started"):
            status = "running"
    info = TaskInfo(
        id=name,
        status=status,
        created_at=timestamps.format(datetime.fromtimestamp(record.created, UTC)),
    )
    return with_outcome(info, outcome)


def with_outcome(info: TaskInfo, outcome: results.Outcome | None) -> TaskInfo:
    """A task's view completed with its outcome, once there is one."""
    if outcome is not None:
        if outcome.ok:
            info.status, info.response = "succeeded", outcome.response
        elif outcome.error is not None:
            info.status = "failed"
            info.error = {
                "message": outcome.error.message,
                "code": outcome.error.reason,
                "type": outcome.error.type,
            }
    return info


def task_info(obj: Obj, outcome: results.Outcome | None) -> TaskInfo:
    """The task view of an LLMJob and its outcome."""
    job = LLMJob.model_validate(obj)
    conds = [c.wire() for c in job.status.conditions]
    info = TaskInfo(
        id=job.metadata.name,
        status=(job.status.state or conditions.job_state(conds)).lower(),
        created_at=obj["metadata"].get("creationTimestamp"),
    )
    return with_outcome(info, outcome)
