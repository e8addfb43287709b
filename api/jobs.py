"""/v1/jobs: LLMJobs over HTTP, the same resources `kubectl apply` creates.

POST takes a job's spec as in a manifest (camelCase), GET lists or reads them,
``/result?version=N`` returns a stored result version, DELETE cancels, and
``/events`` streams the job's status changes as server-sent events (a watch
on the API server, relayed).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmloom import results
from llmloom.api import admission, serving
from llmloom.api.deps import ServicesDep, TenantDep
from llmloom.api.errors import APIError, responses
from llmloom.api.protocol import SSE_EVENT, JobDeleted, JobList, JobResult, JobView
from llmloom.api.services import Services
from llmloom.kube import LLMJOBS, Obj
from llmloom.resources import LLMJobSpec, unknown_fields

router = APIRouter()


class JobRequest(BaseModel):
    """The body of POST /v1/jobs."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=253)
    """The job's name; generated when left out."""
    spec: dict[str, Any]
    """The LLMJob spec, as in a manifest."""


def view(obj: Obj) -> dict[str, Any]:
    """A job as the API shows it: the manifest's parts a client needs."""
    meta = obj["metadata"]
    return {
        "id": meta["name"],
        "object": "llmloom.job",
        "uid": meta["uid"],
        "generation": meta.get("generation", 1),
        "created_at": meta.get("creationTimestamp"),
        "spec": obj.get("spec", {}),
        "status": obj.get("status", {}),
    }


def _not_found(job_id: str) -> APIError:
    return APIError(404, f"No job found with id '{job_id}'.", param="job_id", code="job_not_found")


async def _get(services: Services, tenant: str, job_id: str) -> Obj:
    obj = await serving.find(services, LLMJOBS, tenant, job_id)
    if obj is None:
        raise _not_found(job_id)
    return obj


@router.post(
    "/v1/jobs",
    status_code=201,
    response_model=None,
    responses={
        201: {"model": JobView, "description": "The job, as created"},
        **responses(400, 401, 404, 409, 413, 429),
    },
)
async def create_job(request: JobRequest, services: ServicesDep, tenant: TenantDep) -> JSONResponse:
    unknown = unknown_fields(LLMJobSpec, request.spec, "spec")
    if unknown:
        raise APIError(400, f"{unknown[0]}: unknown field", param=unknown[0])
    try:
        spec = LLMJobSpec.model_validate(request.spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(["spec", *(str(p) for p in first["loc"])])
        raise APIError(400, f"{param}: {first['msg']}", param=param) from exc
    flavor = services.catalog.named(tenant, spec.flavor)  # the watch caches: no read
    if flavor is None:
        raise APIError(
            404,
            f"The flavor '{spec.flavor}' does not exist.",
            param="spec.flavor",
            code="model_not_found",
        )
    admitted = await admission.admit(
        services, tenant, flavor, lambda: admission.spec_estimate(flavor, spec)
    )
    job = await serving.submit(
        services, tenant, flavor, spec, prefix="job-", name=request.name, admission=admitted
    )
    obj = await services.kube.get(LLMJOBS, tenant, job.metadata.name)
    location = f"/v1/jobs/{job.metadata.name}"
    return JSONResponse(view(obj), 201, headers={**admitted.headers, "Location": location})


@router.get("/v1/jobs", response_model=None, responses={200: {"model": JobList}, **responses(401)})
async def list_jobs(services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    items = await services.kube.list(LLMJOBS, tenant)
    return {"object": "list", "data": [view(o) for o in items]}


@router.get(
    "/v1/jobs/{job_id}",
    response_model=None,
    responses={200: {"model": JobView}, **responses(401, 404)},
)
async def get_job(job_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    return view(await _get(services, tenant, job_id))


@router.get(
    "/v1/jobs/{job_id}/result",
    response_model=None,
    responses={200: {"model": JobResult}, **responses(400, 401, 404)},
)
async def get_result(
    job_id: str,
    services: ServicesDep,
    tenant: TenantDep,
    version: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    """A stored result: the latest, or the version asked for (older ones stay until their TTL)."""
    obj = await _get(services, tenant, job_id)
    latest = (obj.get("status", {}).get("result") or {}).get("version")
    wanted = version or latest
    outcome = await results.load(services.redis, obj["metadata"]["uid"], wanted) if wanted else None
    if outcome is None:
        raise APIError(
            404,
            f"Job '{job_id}' has no result" + (f" version {wanted}" if wanted else "") + " (yet).",
            param="version",
            code="result_not_found",
        )
    body: dict[str, Any] = {"id": job_id, "object": "llmloom.result", "version": wanted}
    if outcome.ok:
        body["response"] = outcome.response
    elif outcome.error is not None:
        body["error"] = {"message": outcome.error.message, "code": outcome.error.reason}
    return body


@router.delete(
    "/v1/jobs/{job_id}",
    response_model=None,
    responses={200: {"model": JobDeleted}, **responses(401, 404)},
)
async def delete_job(job_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """Delete (and so cancel) a job; its stored results go with it."""
    await _get(services, tenant, job_id)
    if not await serving.delete_job(services, tenant, job_id):  # deleted in between
        raise _not_found(job_id)
    return {"id": job_id, "object": "llmloom.job", "deleted": True}


async def _watch(services: Services, tenant: str, obj: Obj) -> AsyncIterator[bytes]:
    """The job's status as it changes, until it finishes or is deleted."""
    name, version = obj["metadata"]["name"], obj["metadata"]["resourceVersion"]
    yield f"data: {json.dumps(view(obj))}\n\n".encode()
    if obj.get("status", {}).get("state") in ("Succeeded", "Failed"):
        return
    watch = services.kube.watch(
        LLMJOBS,
        tenant,
        version,
        timeout_seconds=int(services.settings.max_wait_seconds),
        field_selector=f"metadata.name={name}",
    )
    async with contextlib.aclosing(watch) as events:  # closes the connection on return
        async for event in events:
            if event.get("type") == "DELETED":
                yield b"event: deleted\ndata: {}\n\n"
                return
            if event.get("type") in ("ADDED", "MODIFIED"):
                current = event["object"]
                yield f"data: {json.dumps(view(current))}\n\n".encode()
                if current.get("status", {}).get("state") in ("Succeeded", "Failed"):
                    return


@router.get(
    "/v1/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The job's view as server-sent events, until it finishes",
            "content": {"text/event-stream": {"schema": SSE_EVENT}},
        },
        **responses(401, 404),
    },
)
async def job_events(job_id: str, services: ServicesDep, tenant: TenantDep) -> StreamingResponse:
    """Server-sent events: the job now, then at every change until it finishes."""
    obj = await _get(services, tenant, job_id)
    return StreamingResponse(_watch(services, tenant, obj), media_type="text/event-stream")


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
