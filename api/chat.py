"""POST /v1/chat/completions: a chat request as an LLMJob, answered when it finishes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, Query
from fastapi.responses import JSONResponse

from llmloom.api import jobs
from llmloom.api.deps import ServicesDep, TenantDep
from llmloom.api.errors import APIError
from llmloom.api.protocol import ChatCompletionRequest
from llmloom.resources import LLMJobSpec

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(
    request: ChatCompletionRequest,
    services: ServicesDep,
    tenant: TenantDep,
    wait_header: Annotated[str | None, Header(alias=jobs.WAIT_HEADER)] = None,
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
    return await jobs.respond(services, job, wait_seconds)


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
