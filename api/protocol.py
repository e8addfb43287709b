"""Request and response models of the routes LLMLoom serves.

Requests are refused at the door (400) for anything the LLMJob resource would
refuse later, so that its limits show in the OpenAPI document; responses are
declared as they are answered, so that the document describes the real API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmloom.resources import Message, Parameters, ResponseFormat

INT32_MAX = 2**31 - 1


class ChatMessage(BaseModel):
    """A chat message as OpenAI clients send it."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str = Field(max_length=1_000_000)
    name: str | None = Field(default=None, max_length=256)

    def to_resource(self) -> Message:
        # "developer" is OpenAI's newer name for the system role.
        role = "system" if self.role == "developer" else self.role
        return Message(role=role, content=self.content, name=self.name)


class StreamOptions(BaseModel):
    """Options of a streamed answer."""

    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False
    """Send the token usage in a last chunk with no choices."""


class JsonSchemaFormat(BaseModel):
    """OpenAI's ``response_format.json_schema``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatRequest(BaseModel):
    """OpenAI's ``response_format``: text, a JSON object, or JSON following a schema."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormatRequest:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is given exactly when type is 'json_schema'")
        return self

    def to_resource(self) -> ResponseFormat:
        schema = self.json_schema
        wire = None if schema is None else schema.model_dump(by_alias=True, exclude_none=True)
        return ResponseFormat(type=self.type, json_schema=wire)


class ChatCompletionRequest(BaseModel):
    """The body of POST /v1/chat/completions (the fields LLMLoom honours)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=512)
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    n: int = Field(default=1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormatRequest | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _one_streamed_choice(self) -> ChatCompletionRequest:
        if self.stream and self.n != 1:
            raise ValueError("n must be 1 when the answer is streamed")
        return self

    def parameters(self) -> Parameters | None:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        params = Parameters(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            stop=stop,
            seed=self.seed,
            choices=self.n if self.n != 1 else None,
            response_format=(
                self.response_format.to_resource()
                if self.response_format and self.response_format.type != "text"
                else None
            ),
        )
        return params if params.wire() else None


SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "description": "One server-sent event (the schema of a text/event-stream is its events')",
    "required": ["data"],
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string", "description": "JSON; a chat stream ends with [DONE]"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}


class TaskQueued(BaseModel):
    """202: the request outlived its wait; its task is polled at ``location``."""

    id: str
    object: Literal["llmloom.task"] = "llmloom.task"
    status: Literal["queued"] = "queued"
    location: str


class ChatCompletion(BaseModel):
    """A chat completion as OpenAI answers it (the provider's answer, passed through)."""

    id: str
    object: str
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class Embedding(BaseModel):
    """One input's vector: floats, or base64 of little-endian float32."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingList(BaseModel):
    """The vectors of POST /v1/embeddings, in input order."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: dict[str, Any] | None = None


class ModelDetails(BaseModel):
    """LLMLoom's own fields of a model: the flavor behind it."""

    provider: str
    model: str
    capabilities: list[str]
    context_window: int | None


class ModelEntry(BaseModel):
    """A flavor, as an OpenAI model object."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    llmloom: ModelDetails


class ModelList(BaseModel):
    """GET /v1/models."""

    object: Literal["list"] = "list"
    data: list[ModelEntry]


class JobView(BaseModel):
    """An LLMJob as /v1/jobs shows it: its spec and status as in the manifest."""

    id: str
    object: Literal["llmloom.job"] = "llmloom.job"
    uid: str
    generation: int
    created_at: str | None
    spec: dict[str, Any]
    status: dict[str, Any]


class JobList(BaseModel):
    """GET /v1/jobs."""

    object: Literal["list"] = "list"
    data: list[JobView]


class JobDeleted(BaseModel):
    """DELETE /v1/jobs/{job_id}."""

    id: str
    object: Literal["llmloom.job"] = "llmloom.job"
    deleted: bool


class JobResult(BaseModel):
    """A stored result version of a job: its response, or its error."""

    id: str
    object: Literal["llmloom.result"] = "llmloom.result"
    version: int
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class TaskInfo(BaseModel):
    """A durable task: the state of the LLMJob behind a request, and its answer once done."""

    id: str
    object: Literal["llmloom.task"] = "llmloom.task"
    status: str
    created_at: str | None = None
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class UsageTotals(BaseModel):
    """Requests and tokens in a budget period."""

    requests: int
    """Requests admitted."""
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FlavorUsage(UsageTotals):
    """One flavor's part: requests by the flavor asked for, tokens by the one that answered."""

    flavor: str


class UsagePeriod(BaseModel):
    """The calendar period (UTC) of the tenant's token budget."""

    type: Literal["month", "day"]
    id: str
    """``2026-11`` or ``2026-11-22``."""
    start: datetime
    end: datetime


class UsageLimits(BaseModel):
    """The limits that hold the tenant (null: none)."""

    requests_per_minute: int | None
    tokens_per_minute: int | None
    token_budget: int | None


class UsageResponse(UsageTotals):
    """GET /v1/usage: the tenant's usage in the current budget period (LLMLoom's own)."""

    object: Literal["llmloom.usage"] = "llmloom.usage"
    tenant: str
    period: UsagePeriod
    pending_tokens: int
    """Estimated tokens of requests still running (settled when they finish)."""
    budget_remaining: int | None
    """Tokens left in the budget (estimates of running requests count); null: no budget."""
    limits: UsageLimits
    flavors: list[FlavorUsage]
