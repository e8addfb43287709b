"""POST /v1/chat/completions: a chat request as an LLMJob, answered when it finishes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Query
from fastapi.responses import JSONResponse

from llmloom.api import jobs
from llmloom.api.deps import ServicesDep, TenantDep
from llmloom.api.errors import APIError
from llmloom.api.protocol import ChatCompletionRequest
from llmloom.resources import LLMJobSpec

router = APIRouter()

TASK_HEADER = "X-LLMLoom-Task"
WAIT_HEADER = "X-LLMLoom-Wait"


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(
    request: ChatCompletionRequest,
    services: ServicesDep,
    tenant: TenantDep,
    wait_header: Annotated[str | None, Header(alias=WAIT_HEADER)] = None,
    wait: Annotated[float | None, Query()] = None,
) -> JSONResponse:
    """Create a chat completion; past the wait limit, answer 202 with a task to poll."""
    wait_seconds = jobs.wait_limit(services, wait_header, wait)
    flavor = await jobs.resolve_flavor(services, tenant, request.model)
    if "chat" not in flavor.spec.capabilities:
        raise APIError(
            400,
            f"The model '{request.model}' does not support chat.",
            param="model",
            code="model_not_supported",
        )
    spec = LLMJobSpec(
        flavor=flavor.metadata.name,
        task="chat",
        messages=[m.to_resource() for m in request.messages],
        parameters=request.parameters(),
    )
    job = await jobs.submit(services, tenant, flavor, spec, prefix="chat-")
    headers = {TASK_HEADER: job.metadata.name}
    outcome = await services.waiter.wait(job.metadata.uid, job.metadata.generation, wait_seconds)
    if outcome is None:
        location = f"/v1/tasks/{job.metadata.name}"
        body: dict[str, Any] = {
            "id": job.metadata.name,
            "object": "llmloom.task",
            "status": "queued",
            "location": location,
        }
        return JSONResponse(body, 202, headers={**headers, "Location": location})
    return JSONResponse(jobs.raise_for_outcome(outcome), headers=headers)


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
