"""The custom resources, as pydantic models: the one source of truth.

``crds/*.yaml`` are generated from these classes (``llmloom.crdgen``) and a unit
test fails when the checked-in files drift. Attribute docstrings become the
field descriptions shown by ``kubectl explain``; validation that the API server
enforces (enums, bounds, CEL rules with messages) is declared here too, so the
Python side and the server agree on what a valid object is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

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


def unknown_fields(model: type[BaseModel], data: Any, path: str = "") -> list[str]:
    """Paths of the keys in ``data`` that ``model`` has no field for, nested models and
    lists of them included. The models ignore unknown fields (an older component must
    read what a newer CRD allows); a request from a person should name them instead."""
    if not isinstance(data, dict):
        return []
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    fields |= {name: f for name, f in model.model_fields.items()}
    found: list[str] = []
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        field = fields.get(key)
        if field is None:
            found.append(where)
            continue
        for inner in _models_in(field.annotation):
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                at = f"{where}[{i}]" if isinstance(value, list) else where
                found += unknown_fields(inner, item, at)
    return found


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation holds (``X | None``, ``list[X]``, ``Annotated[...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def server_default(model: type[Model]) -> dict[str, Any]:
    """A schema default for a nested object (pydantic leaves ``default_factory`` out),
    so that the API server fills it in and ``kubectl get -o yaml`` shows it."""
    return {"default": model().wire()}


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

Provider = Literal["openai", "vllm", "ollama"]
Capability = Literal["chat", "embeddings"]
_CHAT_ONLY: list[Capability] = ["chat"]
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"


class ReplicaRange(Model):
    """Bounds for the number of model-server pods; the operator scales between them."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.min <= self.max", "replicas.min must not exceed replicas.max")
            ]
        }
    )

    min: int = Field(default=1, ge=0, le=1000)
    """Fewest pods; 0 lets the flavor scale to zero (jobs wait in the queue while a pod starts)."""
    max: int = Field(default=1, ge=1, le=1000)
    """Most pods."""


class Toleration(Model):
    """A toleration for the model-server pods, as in a Pod spec."""

    key: str | None = Field(default=None, max_length=316)
    """Taint key the toleration applies to; empty with operator Exists matches all taints."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Exists or Equal."""
    value: str | None = Field(default=None, max_length=63)
    """Taint value to match with operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = None
    """For NoExecute: how long the pod stays bound after the taint appears."""


class ComputeResources(Model):
    """CPU and memory for the model-server container (GPUs are set by deploy.gpus)."""

    requests: dict[str, Annotated[str, Field(pattern=QUANTITY)]] | None = None
    """Resources the scheduler reserves, e.g. {cpu: "4", memory: 32Gi}."""
    limits: dict[str, Annotated[str, Field(pattern=QUANTITY)]] | None = None
    """Upper bounds, e.g. {memory: 48Gi}."""


class ModelCache(Model):
    """Where model weights are kept across restarts of the model server."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.claimName) && has(self.hostPath))",
                    "modelCache takes claimName or hostPath, not both",
                )
            ]
        }
    )

    claim_name: str | None = Field(default=None, max_length=253)
    """An existing PersistentVolumeClaim (ReadWriteMany when replicas.max > 1)."""
    host_path: str | None = Field(default=None, pattern=r"^/", max_length=4096)
    """A directory on the GPU node, shared by the pods on that node."""
    size_limit: str = Field(default="100Gi", pattern=QUANTITY)
    """Size of the emptyDir used when neither claimName nor hostPath is set."""


class EnvVar(Model):
    """An environment variable of the model-server container."""

    name: str = Field(min_length=1, max_length=256)
    """Variable name."""
    value: str = Field(default="", max_length=32768)
    """Variable value."""


class Deploy(Model):
    """A model server the operator runs on GPU nodes, with a worker beside it in each pod."""

    image: str | None = Field(default=None, max_length=512)
    """Model-server image; defaults per provider (vLLM's OpenAI server, Ollama)."""
    args: list[str] | None = Field(default=None, max_length=256)
    """Model-server arguments; defaults per provider (vLLM: --model <model> ...)."""
    env: list[EnvVar] = Field(default_factory=list, max_length=256)
    """Extra environment of the model-server container."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """Port the model server listens on; defaults per provider (vLLM 8000, Ollama 11434)."""
    gpus: int = Field(default=1, ge=0, le=64)
    """nvidia.com/gpu per pod."""
    replicas: ReplicaRange = Field(
        default_factory=ReplicaRange, json_schema_extra=server_default(ReplicaRange)
    )
    """Bounds for autoscaling on queue depth."""
    scale_down_delay_seconds: int = Field(default=300, ge=0, le=86400)
    """How long the load must stay lower before pods are removed."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels the pods require, e.g. {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=64)
    """Tolerations besides the one for the nvidia.com/gpu taint, which is always added."""
    resources: ComputeResources | None = None
    """CPU and memory of the model-server container."""
    model_cache: ModelCache = Field(
        default_factory=ModelCache, json_schema_extra=server_default(ModelCache)
    )
    """Where weights are cached."""


class Retry(Model):
    """Retries of failed provider calls: exponential backoff with jitter."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.minDelaySeconds <= self.maxDelaySeconds",
                    "retry.minDelaySeconds must not exceed retry.maxDelaySeconds",
                )
            ]
        }
    )

    attempts: int = Field(default=3, ge=1, le=20)
    """Calls made to this flavor before giving up on it (1: no retry)."""
    min_delay_seconds: float = Field(default=1.0, ge=0, le=600)
    """Delay before the first retry; it doubles with each further one."""
    max_delay_seconds: float = Field(default=30.0, ge=0, le=3600)
    """Longest delay between two calls (a Retry-After the provider sends is honoured)."""


class Pricing(Model):
    """What the provider charges, for the cost in each job's usage."""

    prompt_per_million: float = Field(default=0.0, ge=0)
    """Price of one million prompt tokens."""
    completion_per_million: float = Field(default=0.0, ge=0)
    """Price of one million completion tokens."""
    currency: str = Field(default="USD", min_length=3, max_length=3)
    """ISO 4217 currency of the prices."""


class RateLimit(Model):
    """What the flavor accepts per minute, e.g. the limits of the provider account behind
    it. The API refuses requests beyond them with 429 before they are queued."""

    requests_per_minute: int | None = Field(default=None, ge=1)
    """Requests per minute; a burst of this many, then one every 60/N seconds."""
    tokens_per_minute: int | None = Field(default=None, ge=1)
    """Tokens per minute: a request's estimate (prompt plus max_tokens) at admission,
    corrected to the tokens the provider counted when it finishes."""


class FlavorSpec(Model):
    """How to reach one model: the wire protocol, the model id and the server."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.endpoint) != has(self.deploy)",
                    "exactly one of spec.endpoint (an existing server) and spec.deploy "
                    "(a server the operator runs) must be set",
                ),
                cel(
                    "!has(self.deploy) || self.provider != 'openai'",
                    "spec.deploy runs vllm or ollama; provider openai needs spec.endpoint",
                ),
            ]
        }
    )

    provider: Provider = Field(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self == oldSelf", "provider is immutable; create a new Flavor instead")
            ]
        }
    )
    """Wire protocol: openai (OpenAI or any OpenAI-compatible server), vllm (the OpenAI
    wire with vLLM's error shapes) or ollama (Ollama's native API)."""
    model: str = Field(min_length=1, max_length=512)
    """Model id sent to the provider, and the name the OpenAI API accepts for it."""
    endpoint: str | None = Field(default=None, pattern=r"^https?://", max_length=2048)
    """Base URL of an existing server, up to and including the API prefix,
    e.g. https://api.openai.com/v1 or http://vllm.models:8000/v1."""
    deploy: Deploy | None = None
    """Run the model server on GPU nodes instead of using an existing one."""
    api_key_secret_ref: SecretKeyRef | None = None
    """Secret holding the provider's API key, sent as a bearer token."""
    capabilities: list[Capability] = Field(
        default_factory=lambda: list(_CHAT_ONLY),
        max_length=2,
        json_schema_extra={"default": ["chat"], "x-kubernetes-list-type": "set"},
    )
    """What the model can do."""
    context_window: int | None = Field(default=None, ge=1)
    """Tokens the model accepts, prompt and output together. Document jobs use it to
    decide whether a document fits one call and how large their chunks may be; unset,
    a document is tried whole and chunked when the provider reports a context overflow."""
    max_output_tokens: int | None = Field(default=None, ge=1)
    """Upper bound on completion tokens requested from the provider."""
    concurrency: int = Field(default=4, ge=1, le=1024)
    """Requests in flight per worker pod; the autoscaler's target load per pod."""
    timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    """Time allowed for one provider call."""
    tokenizer: Literal["cl100k_base", "o200k_base"] | None = None
    """tiktoken encoding for counting tokens; defaults from the model name (cl100k_base
    for models tiktoken does not know)."""
    retry: Retry = Field(default_factory=Retry, json_schema_extra=server_default(Retry))
    """Retries of calls that failed for reasons that may pass (429, 5xx, timeouts)."""
    fallback_flavor: str | None = Field(default=None, min_length=1, max_length=253)
    """Flavor that takes a job whose prompt overflows this model's context: one of the
    namespace's, else a ClusterFlavor granted to it (for a ClusterFlavor: another one)."""
    failover_flavors: list[str] = Field(default_factory=list, max_length=16)
    """Flavors tried in order when this one keeps failing after its retries (named as
    ``fallbackFlavor`` is)."""
    pricing: Pricing | None = None
    """Prices, for the cost in each job's usage."""
    rate_limit: RateLimit | None = None
    """Requests and tokens per minute the flavor accepts through the API."""


class ReplicaStatus(Model):
    """Model-server pods, as the operator last saw them."""

    desired: int = 0
    """Pods the autoscaler asked for."""
    ready: int = 0
    """Pods ready to serve."""


class QueueStatus(Model):
    """The flavor's queue, as the operator last saw it."""

    pending: int = 0
    """Jobs waiting for a worker."""
    running: int = 0
    """Jobs a worker is running."""


class FlavorStatus(Model):
    """Observed state of a flavor."""

    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Ready (jobs can run), with the reason when they cannot."""
    observed_generation: int | None = None
    """The metadata.generation last reconciled."""
    endpoint: str | None = None
    """URL of the model server: spec.endpoint, or the Service of the deployed server."""
    replicas: ReplicaStatus | None = None
    """Model-server pods (deployed flavors)."""
    queue: QueueStatus | None = None
    """Queue depth."""
    selector: str | None = None
    """Label selector of the model-server pods (for the scale subresource)."""
    last_scale_time: datetime | None = None
    """When the load last justified the current number of pods (scale-down delay)."""


# --------------------------------------------------------------------------- ClusterFlavor


class LabelSelectorRequirement(Model):
    """One expression of a label selector, as Kubernetes spells it."""

    key: str = Field(min_length=1, max_length=317)
    """The label's key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the label's value is compared with ``values``."""
    values: list[str] = Field(default_factory=list, max_length=256)
    """Values for In and NotIn; empty for Exists and DoesNotExist."""


class LabelSelector(Model):
    """Kubernetes' label selector: every term must hold; an empty selector selects all."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    """Labels that must be present with exactly these values."""
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=64)
    """Expressions that must all hold."""


class TenantTerms(Model):
    """What one tenant gets of a shared model: its share of the workers and its limits.
    Unset limits are no limit (the tenant's own limits still apply)."""

    weight: int | None = Field(default=None, ge=1, le=1000)
    """Share of the model when tenants compete for it: a tenant of weight 2 is served twice
    as often as one of weight 1 (default 1)."""
    requests_per_minute: int | None = Field(default=None, ge=1)
    """Requests per minute this tenant may send to the model."""
    tokens_per_minute: int | None = Field(default=None, ge=1)
    """Tokens per minute this tenant may spend on the model."""
    token_budget: int | None = Field(default=None, ge=0)
    """Tokens this tenant may spend on the model per budget period (the tenant's period:
    its llmloom.io/token-budget-period, else the API's setting)."""


class TenantOverride(TenantTerms):
    """Terms for one tenant, over the default terms (fields left unset keep the default)."""

    namespace: str = Field(min_length=1, max_length=63)
    """The tenant's namespace."""


class Sharing(Model):
    """How a shared model is divided among the tenants it is granted to."""

    default: TenantTerms = Field(default_factory=TenantTerms)
    """Terms of every granted tenant."""
    tenants: list[TenantOverride] = Field(
        default_factory=list,
        max_length=1000,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["namespace"],
        },
    )
    """Terms of particular tenants, over the default."""
    reserved_slots: int | None = Field(default=None, ge=0, le=1024)
    """Slots of each worker kept for tenants with nothing running while another tenant has
    every other slot (so an interactive request never waits behind a flood); default one
    in eight, at least one; 0 turns it off. A tenant alone uses every slot."""


class ClusterFlavorSpec(FlavorSpec):
    """A Flavor's spec, for a model shared by many tenants, and who may use it. Its pods,
    workers and API-key Secret live in LLMLoom's own namespace; its fallbackFlavor and
    failoverFlavors name other ClusterFlavors."""

    tenant_selector: LabelSelector | None = None
    """Namespaces (tenants) that may use the model, by their labels: an empty selector
    ({}) grants every namespace; unset grants none."""
    sharing: Sharing = Field(default_factory=Sharing)
    """Each tenant's weight and limits on the model."""


class ClusterFlavorStatus(FlavorStatus):
    """Observed state of a shared model."""

    tenants: int | None = None
    """Namespaces granted the model now."""


# --------------------------------------------------------------------------- LLMJob

Task = Literal["chat", "embeddings", "document"]
Strategy = Literal["auto", "single", "iterative", "mapReduce"]
Role = Literal["system", "developer", "user", "assistant", "tool"]
JobState = Literal["Pending", "Queued", "Running", "Suspended", "Succeeded", "Failed"]
Endpoint = Literal["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings"]


class ImageUrl(Model):
    """An image of a content part: an http(s) URL or a data: URL (base64)."""

    url: str = Field(min_length=1, max_length=1_000_000)
    """Where the model server reads the image, or the image itself as a data: URL."""
    detail: Literal["auto", "low", "high"] | None = None
    """How closely the model looks (OpenAI's detail)."""


class InputAudio(Model):
    """Audio of a content part, base64."""

    data: str = Field(min_length=1, max_length=1_000_000)
    """The audio, base64."""
    format: Literal["wav", "mp3"]
    """wav or mp3."""


class FileData(Model):
    """A file of a content part: uploaded (fileId) or inline (fileData, base64)."""

    file_id: str | None = Field(default=None, max_length=256)
    """An uploaded file's id."""
    file_data: str | None = Field(default=None, max_length=1_000_000)
    """The file itself, base64."""
    filename: str | None = Field(default=None, max_length=256)
    """Its name."""


class ContentPart(Model):
    """One part of a message, as OpenAI's content parts: text, an image, audio or a file."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "(self.type == 'text') == has(self.text) && "
                    "(self.type == 'image_url') == has(self.imageUrl) && "
                    "(self.type == 'input_audio') == has(self.inputAudio) && "
                    "(self.type == 'file') == has(self.file)",
                    "a content part carries exactly the field of its type: text, imageUrl, "
                    "inputAudio or file",
                )
            ]
        }
    )

    type: Literal["text", "image_url", "input_audio", "file"]
    """text, image_url, input_audio or file."""
    text: str | None = Field(default=None, max_length=1_000_000)
    """The text (type text)."""
    image_url: ImageUrl | None = None
    """The image (type image_url)."""
    input_audio: InputAudio | None = None
    """The audio (type input_audio)."""
    file: FileData | None = None
    """The file (type file)."""


class FunctionCall(Model):
    """The function a tool call names, and its arguments."""

    name: str = Field(min_length=1, max_length=256)
    """The function's name."""
    arguments: str = Field(default="", max_length=1_000_000)
    """Its arguments, as the JSON text the model wrote."""


class ToolCall(Model):
    """A call of a tool the model made, in an assistant message."""

    id: str = Field(min_length=1, max_length=256)
    """The call's id: the tool message that answers it names it (toolCallId)."""
    type: Literal["function"] = "function"
    """function."""
    function: FunctionCall
    """What is called, with what."""


class Message(Model):
    """One chat message, as the OpenAI API's: text or content parts, tool calls, or a tool's
    answer."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.content) && has(self.parts))",
                    "a message takes content (text) or parts, not both",
                ),
                cel(
                    "self.role != 'tool' || has(self.toolCallId)",
                    "a tool message names the call it answers (toolCallId)",
                ),
            ]
        }
    )

    role: Role
    """Who speaks: system (developer is its newer name), user, assistant or tool."""
    content: str | None = Field(default=None, max_length=1_000_000)
    """The text of the message (or parts; an assistant message with tool calls may have
    neither)."""
    parts: list[ContentPart] | None = Field(default=None, max_length=64)
    """The message as content parts (text, images, audio, files) instead of content."""
    name: str | None = Field(default=None, max_length=256)
    """Optional name of the participant."""
    tool_calls: list[ToolCall] | None = Field(default=None, max_length=128)
    """Calls of tools the assistant made."""
    tool_call_id: str | None = Field(default=None, max_length=256)
    """Role tool: the id of the call this message answers."""


class FunctionDefinition(Model):
    """A function the model may call."""

    name: str = Field(min_length=1, max_length=64)
    """Its name."""
    description: str | None = Field(default=None, max_length=100_000)
    """What it does, for the model."""
    parameters: dict[str, Any] | None = Field(
        default=None,
        # A JSON schema of the user's: the API server keeps it as it is.
        json_schema_extra={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    )
    """Its arguments, as a JSON schema."""
    strict: bool | None = None
    """Whether the arguments must follow the schema exactly."""


class Tool(Model):
    """A tool the model may call (a function)."""

    type: Literal["function"] = "function"
    """function."""
    function: FunctionDefinition
    """The function."""


class ToolChoice(Model):
    """Which tool the model calls: a mode, or one function by name (OpenAI's tool_choice)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.mode) != has(self.function)",
                    "toolChoice takes a mode or a function, not both",
                )
            ]
        }
    )

    mode: Literal["none", "auto", "required"] | None = None
    """none, auto or required."""
    function: str | None = Field(default=None, max_length=64)
    """The name of the one function the model must call."""


class RequestRef(Model):
    """A request of the OpenAI API, stored beside the results (the job holds no prompt)."""

    endpoint: Endpoint
    """The API the request was sent to: /v1/chat/completions, /v1/completions,
    /v1/responses or /v1/embeddings."""
    key: str = Field(min_length=1, max_length=256)
    """Where its body is stored (Redis), for the results' lifetime."""
    bytes: int = Field(ge=0)
    """The size of the body."""


class ResponseFormat(Model):
    """The form of the answer, as OpenAI's ``response_format``: plain text, any JSON
    object, or JSON that follows a schema. Providers constrain the model's output
    (vLLM and llama.cpp with a grammar, Ollama with ``format``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "(self.type == 'json_schema') == has(self.jsonSchema)",
                    "jsonSchema is set exactly when type is json_schema",
                )
            ]
        }
    )

    type: Literal["text", "json_object", "json_schema"] = "text"
    """text, json_object or json_schema."""
    json_schema: dict[str, Any] | None = Field(
        default=None,
        # The API server keeps the object as it is: it is a JSON schema of the user's.
        json_schema_extra={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    )
    """OpenAI's ``json_schema`` object: ``name``, ``schema`` and ``strict``."""


class Parameters(Model):
    """Sampling parameters passed to the provider (OpenAI's names, camelCase here)."""

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
    dimensions: int | None = Field(default=None, ge=1, le=65536)
    """Length of the embedding vectors, for models that can shorten them."""
    response_format: ResponseFormat | None = None
    """The form of a chat answer: text, a JSON object, or JSON following a schema."""
    choices: int | None = Field(default=None, ge=1, le=16)
    """Choices to generate for a chat, OpenAI's ``n`` (each from its own call to the
    model). Not named ``n``: YAML 1.1, as kubectl reads it, takes ``n`` for false."""
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    """Penalty for tokens that appeared at all."""
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    """Penalty for tokens by how often they appeared."""
    logprobs: bool | None = None
    """Return the log probabilities of the tokens of the answer."""
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    """With logprobs: the most likely alternatives at each position."""
    logit_bias: dict[str, int] | None = None
    """Bias (-100 to 100) added to the logits of token ids."""
    reasoning_effort: str | None = Field(default=None, max_length=32)
    """For reasoning models: minimal, low, medium or high."""
    parallel_tool_calls: bool | None = None
    """Whether the model may call several tools in one answer."""
    user: str | None = Field(default=None, max_length=256)
    """Who the end user is, for the provider's abuse monitoring."""
    extra: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    )
    """Further parameters passed to the model server as they are: a server's own, such as
    vLLM's top_k, min_p, repetition_penalty or guided decoding."""


class KeyRef(Model):
    """A key of a ConfigMap or Secret in the job's namespace."""

    name: str = Field(min_length=1, max_length=253)
    """Name of the ConfigMap or Secret."""
    key: str = Field(min_length=1, max_length=253)
    """Key whose value is the document (UTF-8 text)."""


class DocumentSource(Model):
    """Where a document job's text comes from: exactly one of the four."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[has(self.text), has(self.configMapKeyRef), has(self.secretKeyRef),"
                    " has(self.url)].exists_one(x, x)",
                    "spec.document takes exactly one of text, configMapKeyRef, secretKeyRef "
                    "and url",
                )
            ]
        }
    )

    text: str | None = Field(default=None, max_length=1_000_000)
    """The document itself, inline (objects are limited to about 1.5 MiB; use a
    ConfigMap, a Secret or a URL for larger ones)."""
    config_map_key_ref: KeyRef | None = None
    """A key of a ConfigMap in the job's namespace (data or binaryData)."""
    secret_key_ref: KeyRef | None = None
    """A key of a Secret in the job's namespace."""
    url: str | None = Field(default=None, pattern=r"^https?://", max_length=2048)
    """An http or https URL the worker fetches (from its own network) when the job runs."""


class Chunking(Model):
    """How a long document is cut into turns (chunks) and how their answers are combined."""

    create_new_turn_after: int = Field(default=2000, ge=32, le=1_000_000)
    """Tokens per turn (chunk), counted with the flavor's tokenizer. Turns end at
    paragraph boundaries, else at sentence boundaries; only a sentence longer than a
    turn is cut between tokens. Also bounds the summaries one reduce call reads.
    Lowered to fit the flavor's contextWindow when that is set."""
    max_new_turns: int = Field(default=4, ge=1, le=1000)
    """Strategy iterative: turns sent together in one call (a batch)."""
    summary_turns: int = Field(default=2, ge=0, le=100)
    """Strategy iterative: answers of the previous batches carried into each call as
    rolling context (0: none)."""
    reduce_summary: bool = True
    """True: the answers for the parts are consolidated into one answer with
    spec.reducePrompt (recursively while they overflow one call). False: the answer is
    the parts' answers joined in order, with no consolidating call. Its length is bounded
    by parameters.maxTokens (or the flavor's maxOutputTokens) like every call's."""


class LLMJobSpec(Model):
    """One unit of LLM work, run on a flavor."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.task != 'chat' || (has(self.messages) != has(self.request)"
                    " && !has(self.texts))",
                    "a chat job takes spec.messages or spec.request (and no spec.texts)",
                ),
                cel(
                    "self.task != 'embeddings' || (has(self.texts) != has(self.request)"
                    " && !has(self.messages))",
                    "an embeddings job takes spec.texts or spec.request (and no spec.messages)",
                ),
                cel(
                    "self.task != 'document' || (has(self.document) && has(self.prompt)"
                    " && !has(self.messages) && !has(self.texts) && !has(self.request))",
                    "a document job takes spec.document and spec.prompt (and no spec.messages, "
                    "spec.texts or spec.request)",
                ),
                cel(
                    "!has(self.request) || (self.task == 'embeddings') =="
                    " (self.request.endpoint == '/v1/embeddings')",
                    "spec.request of an embeddings job is a /v1/embeddings request, of a chat "
                    "job one of the others",
                ),
                cel(
                    "!has(self.request) || !(has(self.tools) || has(self.toolChoice))",
                    "a stored request carries its own tools",
                ),
                cel(
                    "self.task == 'chat' || !(has(self.tools) || has(self.toolChoice))",
                    "spec.tools and toolChoice are for chat jobs",
                ),
                cel(
                    "self.task == 'document' || !(has(self.document) || has(self.prompt)"
                    " || has(self.reducePrompt) || has(self.strategy) || has(self.chunking))",
                    "spec.document, prompt, reducePrompt, strategy and chunking are for task "
                    "document only",
                ),
                cel(
                    "self.task != 'document' || !has(self.stream) || !self.stream",
                    "a document job cannot stream (spec.stream); its progress is in "
                    "status.progress",
                ),
            ]
        }
    )

    flavor: str = Field(min_length=1, max_length=253)
    """Name of the Flavor, in the job's namespace, that runs the job."""
    task: Task = Field(
        default="chat",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self == oldSelf", "task is immutable; create a new LLMJob instead")
            ]
        },
    )
    """Kind of work: chat (complete spec.messages), embeddings (embed spec.texts) or
    document (apply spec.prompt to spec.document, in chunks when it is long)."""
    messages: list[Message] | None = Field(default=None, min_length=1, max_length=2_000)
    """The conversation to complete (task chat); at least one message."""
    tools: list[Tool] | None = Field(default=None, max_length=128)
    """Task chat: tools (functions) the model may call."""
    tool_choice: ToolChoice | None = None
    """Task chat: whether and which tool the model must call."""
    request: RequestRef | None = Field(
        default=None,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self == oldSelf", "spec.request is immutable; create a new LLMJob")
            ]
        },
    )
    """A request of the OpenAI API, by reference (set by the API for the requests it
    serves): its body is stored beside the results and sent to the model server as the
    client sent it, so no prompt lives in the object."""
    texts: list[Annotated[str, Field(max_length=100_000)]] | None = Field(
        default=None, min_length=1, max_length=2048
    )
    """The texts to embed (task embeddings), one vector each, in order."""
    document: DocumentSource | None = None
    """The document to process (task document)."""
    prompt: str | None = Field(default=None, min_length=1, max_length=100_000)
    """Task document: the instruction applied to the whole document, or to each chunk of
    it (e.g. "Summarise the key decisions.")."""
    reduce_prompt: str | None = Field(default=None, min_length=1, max_length=100_000)
    """Task document: the instruction that combines the answers for the chunks into one;
    defaults to combining them into one answer to spec.prompt."""
    strategy: Strategy | None = None
    """Task document: auto (unset: one call when the document fits the flavor's
    context, else mapReduce; a context overflow reported by the provider switches to the
    fallbackFlavor or to mapReduce), single (one call), iterative (turns in order, in
    batches of chunking.maxNewTurns, earlier answers carried along) or mapReduce (chunks
    in parallel up to the flavor's concurrency, then combined)."""
    chunking: Chunking | None = None
    """Task document: how chunks are cut and combined (defaults when unset)."""
    parameters: Parameters | None = None
    """Sampling parameters."""
    stream: bool = False
    """Publish the answer's deltas as the model produces them (the API relays them as
    server-sent events); the stored result is still the whole answer."""
    priority: int = Field(default=0, ge=-1000, le=1000)
    """Above 0: taken before every normal job of the flavor; below 0: after them."""
    suspend: bool = False
    """True holds the job: it is not started, and a running attempt is stopped.
    Setting it back to false runs the job (as a new spec version)."""
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    """Fail the job with reason DeadlineExceeded if it has not finished this many
    seconds after it was created (time in the queue counts)."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    """Delete the job, and its stored results, this many seconds after it finished."""


class Usage(Model):
    """Tokens spent by the job, as the provider counted them where it reports them."""

    prompt_tokens: int = 0
    """Tokens read."""
    completion_tokens: int = 0
    """Tokens generated."""
    total_tokens: int = 0
    """Sum of both."""
    cost: float | None = None
    """Cost from the pricing of the flavor that answered, in its currency."""


ProgressPhase = Literal["single", "map", "iterate", "reduce"]


class Progress(Model):
    """How far a document job has come: provider calls made and planned."""

    done: int = 0
    """Calls finished."""
    total: int = 0
    """Calls planned; revised when a reduction needs more or fewer calls than estimated."""
    phase: ProgressPhase | None = None
    """What runs now: single, map, iterate or reduce."""


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
    """One word for kubectl get: Pending, Queued, Running, Suspended, Succeeded or Failed."""
    observed_generation: int | None = None
    """The metadata.generation last acted on."""
    attempts: int | None = None
    """How many times a worker started the job."""
    flavor_used: str | None = None
    """The flavor that produced the result."""
    usage: Usage | None = None
    """Tokens spent."""
    progress: Progress | None = None
    """Document jobs: calls done out of the total, updated as the job runs (at most
    about once a second)."""
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
    creation_timestamp: datetime | None = None


class Flavor(Model):
    """A Flavor object as read from the API server (or a ClusterFlavor: ``shared``)."""

    api_version: str = API_VERSION
    kind: Literal["Flavor", "ClusterFlavor"] = "Flavor"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: FlavorSpec
    status: FlavorStatus = Field(default_factory=FlavorStatus)

    @property
    def shared(self) -> bool:
        """A cluster-scoped model that tenants share (a ClusterFlavor)."""
        return self.kind == "ClusterFlavor"

    def home(self, release_namespace: str) -> str:
        """The namespace of the flavor's pods, workers and API-key Secret: its own, or the
        release's for a shared model."""
        return release_namespace if self.shared else self.metadata.namespace


class ClusterFlavor(Flavor):
    """A ClusterFlavor object: a Flavor that lives outside any namespace, shared by the
    tenants its ``tenantSelector`` grants. Wherever a Flavor is used, one of these can
    be (``shared`` tells them apart)."""

    kind: Literal["Flavor", "ClusterFlavor"] = "ClusterFlavor"
    spec: ClusterFlavorSpec
    status: ClusterFlavorStatus = Field(default_factory=ClusterFlavorStatus)


class LLMJob(Model):
    """An LLMJob object as read from the API server."""

    api_version: str = API_VERSION
    kind: Literal["LLMJob"] = "LLMJob"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: LLMJobSpec
    status: LLMJobStatus = Field(default_factory=LLMJobStatus)


# --------------------------------------------------------------------------- LLMBatch

BatchEndpoint = Endpoint
BatchState = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]


class LLMBatchSpec(Model):
    """Requests of an OpenAI batch file, run as LLMJobs within a completion window.

    Created by POST /v1/batches, which checks the input file and turns each of its
    lines into an LLMJob spec (or the error the same request would get)."""

    input_file_id: str = Field(
        min_length=1,
        max_length=256,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self == oldSelf", "inputFileId is immutable; create a new batch instead")
            ]
        },
    )
    """The uploaded file (purpose batch) whose lines are the requests, one JSON object each."""
    endpoint: BatchEndpoint = Field(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self == oldSelf", "endpoint is immutable; create a new batch instead")
            ]
        }
    )
    """The API every request of the batch goes to: /v1/chat/completions, /v1/completions,
    /v1/responses or /v1/embeddings."""
    completion_window: Literal["24h"] = Field(
        default="24h",
        json_schema_extra={
            "x-kubernetes-validations": [cel("self == oldSelf", "completionWindow is immutable")]
        },
    )
    """Time the batch has from its creation; requests not run by then end as batch_expired."""
    metadata: dict[str, Annotated[str, Field(max_length=512)]] = Field(
        default_factory=dict,
        max_length=16,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.all(k, size(k) <= 64)", "spec.metadata keys are at most 64 characters")
            ]
        },
    )
    """Up to 16 key-value pairs for the caller's own use (keys up to 64 characters)."""
    cancel: bool = Field(
        default=False,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self || !oldSelf", "a cancelled batch cannot be resumed; create a new one")
            ]
        },
    )
    """True cancels the batch: requests not finished are stopped, and the output and error
    files hold what had finished."""


class BatchError(Model):
    """Why a batch failed validation, as OpenAI reports it."""

    code: str = Field(max_length=128)
    """Machine-readable code, e.g. invalid_json_line, duplicate_custom_id."""
    message: str = Field(max_length=4096)
    """What is wrong, for a person."""
    line: int | None = None
    """Line of the input file (from 1), where one is at fault."""
    param: str | None = Field(default=None, max_length=256)
    """Field of the line at fault, where one is."""


class RequestCounts(Model):
    """How many of the batch's requests ended, and how."""

    total: int = 0
    """Requests (lines) in the input file."""
    completed: int = 0
    """Requests that succeeded: lines of the output file."""
    failed: int = 0
    """Requests that failed or were not run: lines of the error file."""


class LLMBatchStatus(Model):
    """Observed state of a batch."""

    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Succeeded once the batch ended: True when completed, False when it failed, expired or
    was cancelled."""
    state: BatchState | None = None
    """The OpenAI batch status: validating, failed, in_progress, finalizing, completed,
    expired, cancelling or cancelled."""
    request_counts: RequestCounts | None = None
    """Requests in all, succeeded and failed."""
    usage: Usage | None = None
    """Tokens spent by the batch's requests, summed."""
    output_file_id: str | None = None
    """File holding the responses of the requests that succeeded, once the batch ended."""
    error_file_id: str | None = None
    """File holding the requests that failed or were not run, once the batch ended."""
    errors: list[BatchError] | None = Field(default=None, max_length=1000)
    """Why the input file was refused (state failed)."""
    in_progress_at: datetime | None = None
    """When the requests started to run."""
    expires_at: datetime | None = None
    """When the completion window ends."""
    finalizing_at: datetime | None = None
    """When the output and error files started to be written."""
    completed_at: datetime | None = None
    """When the batch completed."""
    failed_at: datetime | None = None
    """When the batch failed validation."""
    expired_at: datetime | None = None
    """When the batch expired."""
    cancelling_at: datetime | None = None
    """When the cancellation started."""
    cancelled_at: datetime | None = None
    """When the cancellation ended."""
    message: str | None = None
    """Human-readable summary of the latest state."""


class LLMBatch(Model):
    """An LLMBatch object as read from the API server."""

    api_version: str = API_VERSION
    kind: Literal["LLMBatch"] = "LLMBatch"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: LLMBatchSpec
    status: LLMBatchStatus = Field(default_factory=LLMBatchStatus)


# --------------------------------------------------------------------------- APIToken


class APITokenSpec(Model):
    """A bearer token of the namespace's tenant, kept as its sha256 only: the token itself
    is shown once, when it is made (``llmloom token create``)."""

    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self == oldSelf", "sha256 is immutable; make a new token instead")
            ]
        },
    )
    """The sha256 of the token, hex."""
    description: str | None = Field(default=None, max_length=256)
    """What the token is for, for people."""
    expires_at: datetime | None = None
    """When the token stops working; unset: when it is deleted."""


class APITokenStatus(Model):
    """Nothing is written here: a request costs no write to the token."""


class APIToken(Model):
    """An APIToken object as read from the API server."""

    api_version: str = API_VERSION
    kind: Literal["APIToken"] = "APIToken"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: APITokenSpec
