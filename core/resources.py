"""The custom resources, as pydantic models: the one source of truth.

``crds/*.yaml`` are generated from these classes (``llmloom.crdgen``) and a unit
test fails when the checked-in files drift. Attribute docstrings become the
field descriptions shown by ``kubectl explain``; validation that the API server
enforces (enums, bounds, CEL rules with messages) is declared here too, so the
Python side and the server agree on what a valid object is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from llmloom import API_VERSION


class Model(BaseModel):
    """Base for every resource model: camelCase on the wire, docstrings as descriptions."""

    # Unknown fields are ignored, not refused: the API server already prunes
    # them, and an older component must still read objects a newer CRD allows.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="ignore",
    )

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def cel(rule: str, message: str) -> dict[str, Any]:
    """One CEL validation rule with the message a person reads when it fails."""
    return {"rule": rule, "message": message}


# --------------------------------------------------------------------------- shared


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(Model):
    """One aspect of the object's state, as in the Kubernetes API conventions."""

    type: str = Field(min_length=1, max_length=316)
    """Kind of condition: Accepted, Succeeded or Failed for jobs; Ready for flavors."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str = Field(min_length=1, max_length=1024)
    """CamelCase, machine-readable cause of the last transition."""
    message: str = Field(default="", max_length=32768)
    """Human-readable details of the last transition."""
    last_transition_time: datetime
    """When the status last changed."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation that the condition was set for."""


class SecretKeyRef(Model):
    """A key of a Secret in the same namespace."""

    name: str = Field(min_length=1, max_length=253)
    """Name of the Secret."""
    key: str = Field(default="api-key", min_length=1, max_length=253)
    """Key inside the Secret whose value is used."""


# --------------------------------------------------------------------------- Flavor

Provider = Literal["openai", "vllm"]
Capability = Literal["chat", "embeddings"]
_CHAT_ONLY: list[Capability] = ["chat"]


class FlavorSpec(Model):
    """How to reach one model: the wire protocol, the model id and the server."""

    provider: Provider
    """Wire protocol spoken by the server: openai (OpenAI or any OpenAI-compatible
    server) or vllm (the OpenAI wire with vLLM's error shapes)."""
    model: str = Field(min_length=1, max_length=512)
    """Model id sent to the provider, and the name the OpenAI API accepts for it."""
    endpoint: str = Field(pattern=r"^https?://", max_length=2048)
    """Base URL of an existing server, up to and including the API prefix,
    e.g. https://api.openai.com/v1 or http://vllm.models:8000/v1."""
    api_key_secret_ref: SecretKeyRef | None = None
    """Secret holding the provider's API key, sent as a bearer token."""
    capabilities: list[Capability] = Field(default_factory=lambda: list(_CHAT_ONLY), max_length=2)
    """What the model can do."""
    context_window: int | None = Field(default=None, ge=1)
    """Tokens the model accepts, prompt and output together."""
    max_output_tokens: int | None = Field(default=None, ge=1)
    """Upper bound on completion tokens requested from the provider."""
    timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    """Time allowed for one provider call."""


class FlavorStatus(Model):
    """Observed state of a flavor."""

    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Latest observations of the flavor's state."""
    observed_generation: int | None = None
    """The metadata.generation last reconciled."""


# --------------------------------------------------------------------------- LLMJob

Task = Literal["chat"]
Role = Literal["system", "user", "assistant", "tool"]
JobState = Literal["Pending", "Queued", "Running", "Succeeded", "Failed"]


class Message(Model):
    """One chat message."""

    role: Role
    """Who speaks: system, user, assistant or tool."""
    content: str = Field(max_length=1_000_000)
    """The text of the message."""
    name: str | None = Field(default=None, max_length=256)
    """Optional name of the participant."""


class Parameters(Model):
    """Sampling parameters passed to the provider."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    """Sampling temperature."""
    top_p: float | None = Field(default=None, ge=0, le=1)
    """Nucleus sampling mass."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Most completion tokens to generate."""
    stop: list[str] | None = Field(default=None, max_length=4)
    """Sequences where generation stops."""
    seed: int | None = None
    """Seed for providers that sample deterministically with one."""


class LLMJobSpec(Model):
    """One unit of LLM work, run on a flavor."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.task != 'chat' || has(self.messages)",
                    "spec.messages is required when task is chat",
                ),
            ]
        }
    )

    flavor: str = Field(min_length=1, max_length=253)
    """Name of the Flavor, in the job's namespace, that runs the job."""
    task: Task = "chat"
    """Kind of work: chat."""
    messages: list[Message] | None = Field(default=None, min_length=1, max_length=10_000)
    """The conversation to complete (task chat); at least one message."""
    parameters: Parameters | None = None
    """Sampling parameters."""


class Usage(Model):
    """Tokens spent by the job, as the provider counted them where it reports them."""

    prompt_tokens: int = 0
    """Tokens read."""
    completion_tokens: int = 0
    """Tokens generated."""
    total_tokens: int = 0
    """Sum of both."""


class ResultRef(Model):
    """Where the job's result is stored (results never live in etcd)."""

    version: int
    """Result version: the metadata.generation the result was produced for."""
    key: str
    """Redis key holding the result."""
    bytes: int
    """Size of the stored result."""


class LLMJobStatus(Model):
    """Observed state of a job."""

    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Accepted, then Succeeded or Failed (Succeeded is the summary)."""
    state: JobState | None = None
    """One word for kubectl get: Pending, Queued, Running, Succeeded or Failed."""
    observed_generation: int | None = None
    """The metadata.generation last acted on."""
    attempts: int | None = None
    """How many times a worker started the job."""
    flavor_used: str | None = None
    """The flavor that produced the result."""
    usage: Usage | None = None
    """Tokens spent."""
    result: ResultRef | None = None
    """Reference to the stored result."""
    start_time: datetime | None = None
    """When a worker first started the job."""
    completion_time: datetime | None = None
    """When the job succeeded or failed."""
    message: str | None = None
    """Human-readable summary of the latest state."""


# --------------------------------------------------------------------------- objects


class ObjectMeta(Model):
    """The part of metadata the components read."""

    name: str = ""
    namespace: str = ""
    uid: str = ""
    generation: int = 0
    resource_version: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Flavor(Model):
    """A Flavor object as read from the API server."""

    api_version: str = API_VERSION
    kind: Literal["Flavor"] = "Flavor"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: FlavorSpec
    status: FlavorStatus = Field(default_factory=FlavorStatus)


class LLMJob(Model):
    """An LLMJob object as read from the API server."""

    api_version: str = API_VERSION
    kind: Literal["LLMJob"] = "LLMJob"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: LLMJobSpec
    status: LLMJobStatus = Field(default_factory=LLMJobStatus)
