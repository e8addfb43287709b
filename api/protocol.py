"""Request and response models of the OpenAI routes LLMLoom serves."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmloom.resources import Message, Parameters


class ChatMessage(BaseModel):
    """A chat message as OpenAI clients send it."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str
    name: str | None = None

    def to_resource(self) -> Message:
        # "developer" is OpenAI's newer name for the system role.
        role = "system" if self.role == "developer" else self.role
        return Message(role=role, content=self.content, name=self.name)


class StreamOptions(BaseModel):
    """Options of a streamed answer."""

    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False
    """Send the token usage in a last chunk with no choices."""


class ChatCompletionRequest(BaseModel):
    """The body of POST /v1/chat/completions (the fields LLMLoom honours)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported")
        return n

    def parameters(self) -> Parameters | None:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        params = Parameters(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            stop=stop,
            seed=self.seed,
        )
        return params if params.wire() else None


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
