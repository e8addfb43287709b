"""Turning requests into LLMJob resources, and their outcomes into answers.

The API enqueues each job itself (the operator is not on the hot path); the
operator later records Accepted, and its own enqueue attempt is a no-op thanks
to the marker in ``llmloom.queues``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse

from llmloom import API_VERSION, conditions, queues, results
from llmloom.api.errors import APIError
from llmloom.api.observability import PROVIDER_MS
from llmloom.api.protocol import TaskInfo
from llmloom.api.services import Services
from llmloom.kube import FLAVORS, LLMJOBS, KubeError, Obj
from llmloom.resources import Flavor, LLMJob, LLMJobSpec

ORIGIN_LABEL = "llmloom.io/origin"


async def resolve_flavor(services: Services, namespace: str, model: str) -> Flavor:
    """The tenant's flavor for a requested model: by flavor name, else by model id."""
    named = await services.kube.find(FLAVORS, namespace, model)
    if named is not None:
        return Flavor.model_validate(named)
    for item in await services.kube.list(FLAVORS, namespace):
        if item.get("spec", {}).get("model") == model:
            return Flavor.model_validate(item)
    raise APIError(
        404,
        f"The model '{model}' does not exist or you do not have access to it.",
        "invalid_request_error",
        param="model",
        code="model_not_found",
    )


async def submit(
    services: Services,
    namespace: str,
    flavor: Flavor,
    spec: LLMJobSpec,
    prefix: str,
    name: str | None = None,
) -> LLMJob:
    """Create the LLMJob (named, or with a generated name) and put it on its flavor's queue."""
    metadata: dict[str, Any] = {"labels": {ORIGIN_LABEL: "api"}}
    metadata.update({"name": name} if name else {"generateName": prefix})
    body = {"apiVersion": API_VERSION, "kind": "LLMJob", "metadata": metadata, "spec": spec.wire()}
    try:
        job = LLMJob.model_validate(await services.kube.create(LLMJOBS, namespace, body))
    except KubeError as exc:
        if exc.code == 409:
            raise APIError(
                409, exc.message, "invalid_request_error", code="already_exists"
            ) from exc
        if exc.code in (400, 422):
            raise APIError(
                400, exc.message, "invalid_request_error", code="invalid_request"
            ) from exc
        raise
    ref = queues.JobRef(
        namespace=namespace,
        name=job.metadata.name,
        uid=job.metadata.uid,
        generation=job.metadata.generation,
    )
    await asyncio.to_thread(
        queues.enqueue,
        services.sync_redis,
        spec.flavor,
        ref,
        spec.priority,
        queues.job_timeout(flavor),
    )
    return job


TASK_HEADER = "X-LLMLoom-Task"
WAIT_HEADER = "X-LLMLoom-Wait"


async def respond(
    services: Services,
    job: LLMJob,
    wait_seconds: float,
    shape: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> JSONResponse:
    """Wait for the job's answer: the OpenAI response (through ``shape``), its error, or
    past the wait, 202 with the task to poll."""
    headers = {TASK_HEADER: job.metadata.name}
    outcome = await services.waiter.wait(job.metadata.uid, job.metadata.generation, wait_seconds)
    if outcome is None:
        location = f"/v1/tasks/{job.metadata.name}"
        body = {
            "id": job.metadata.name,
            "object": "llmloom.task",
            "status": "queued",
            "location": location,
        }
        return JSONResponse(body, 202, headers={**headers, "Location": location})
    if outcome.usage is not None and outcome.flavor is not None:
        services.metrics.count_tokens(job.metadata.namespace, outcome.flavor, outcome.usage)
    if outcome.provider_ms is not None:
        headers[PROVIDER_MS] = str(outcome.provider_ms)
    response = raise_for_outcome(outcome)
    return JSONResponse(shape(response) if shape else response, headers=headers)


def wait_limit(services: Services, header: str | None, query: float | None) -> float:
    """How long to wait for a result: query parameter, header, or the default, capped."""
    raw: Any = query if query is not None else header
    if raw is None:
        return services.settings.wait_seconds
    try:
        value = float(raw)
    except ValueError:
        raise APIError(400, "wait must be a number of seconds", param="wait") from None
    if value < 0:
        raise APIError(400, "wait must not be negative", param="wait")
    return min(value, services.settings.max_wait_seconds)


def raise_for_outcome(outcome: results.Outcome) -> dict[str, Any]:
    """The response of a succeeded job, or the APIError of a failed one."""
    if outcome.ok and outcome.response is not None:
        return outcome.response
    err = outcome.error or results.ErrorInfo(reason="Unknown", message="the job failed")
    raise APIError(err.status_code, err.message, err.type, code=err.reason)


def task_info(obj: Obj, outcome: results.Outcome | None) -> TaskInfo:
    """The task view of an LLMJob and its outcome."""
    job = LLMJob.model_validate(obj)
    conds = [c.wire() for c in job.status.conditions]
    info = TaskInfo(
        id=job.metadata.name,
        status=(job.status.state or conditions.job_state(conds)).lower(),
        created_at=obj["metadata"].get("creationTimestamp"),
    )
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
