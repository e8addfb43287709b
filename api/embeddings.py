"""POST /v1/embeddings: texts embedded by an LLMJob with task embeddings."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Header, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from llmloom.api import admission, serving
from llmloom.api.deps import ServicesDep, TenantDep
from llmloom.api.errors import APIError, invalid_as_400, responses
from llmloom.api.protocol import EmbeddingList, TaskQueued
from llmloom.embeddings import encoded
from llmloom.resources import LLMJobSpec, Parameters

router = APIRouter()
MAX_INPUTS = 2048
MAX_INPUT_CHARS = 100_000  # as an LLMJob's spec.texts allows


class EmbeddingRequest(BaseModel):
    """The body of POST /v1/embeddings."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=65536)
    user: str | None = None

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else self.input
        if not texts:
            raise APIError(400, "input must not be empty", param="input")
        if not all(isinstance(t, str) for t in texts):
            raise APIError(400, "token arrays are not supported: send the text", param="input")
        if len(texts) > MAX_INPUTS:
            raise APIError(400, f"at most {MAX_INPUTS} inputs per request", param="input")
        if any(len(t) > MAX_INPUT_CHARS for t in texts if isinstance(t, str)):
            raise APIError(
                400, f"each input holds at most {MAX_INPUT_CHARS} characters", param="input"
            )
        return [str(t) for t in texts]


@router.post(
    "/v1/embeddings",
    response_model=None,
    responses={
        200: {"model": EmbeddingList, "description": "One vector per input, in order"},
        202: {"model": TaskQueued, "description": "Still running: poll the task"},
        **responses(400, 401, 404, 413, 429, 502, 503, 504),
    },
)
async def create_embeddings(
    request: EmbeddingRequest,
    services: ServicesDep,
    tenant: TenantDep,
    wait_header: Annotated[str | None, Header(alias=serving.WAIT_HEADER)] = None,
    wait: Annotated[float | None, Query(ge=0)] = None,
) -> JSONResponse:
    """Embed the input; past the wait limit, answer 202 with a task to poll."""
    texts = request.texts()
    wait_seconds = serving.wait_limit(services, wait_header, wait)
    flavor = await serving.resolve_flavor(services, tenant, request.model)
    if "embeddings" not in flavor.spec.capabilities:
        raise APIError(
            400,
            f"The model '{request.model}' does not do embeddings.",
            param="model",
            code="model_not_supported",
        )
    await serving.ensure_available(services, tenant, flavor)
    with invalid_as_400():
        params = Parameters(dimensions=request.dimensions) if request.dimensions else None
        spec = LLMJobSpec(
            flavor=flavor.metadata.name, task="embeddings", texts=texts, parameters=params
        )
    admitted = await admission.admit(
        services, tenant, flavor, lambda: admission.texts_estimate(flavor, texts)
    )
    job = await serving.submit(services, tenant, flavor, spec, prefix="embed-", admission=admitted)

    def shape(response: dict[str, Any]) -> dict[str, Any]:
        return encoded(response, request.encoding_format)

    return await serving.respond(services, job, wait_seconds, shape, admitted.headers)


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
