"""Settings of each process, read once from the environment (prefix ``LLMLOOM_``).

Each process builds exactly one of these objects at start and passes it down;
nothing reads the environment after that.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """What every component needs: where Redis and the API server are."""

    model_config = SettingsConfigDict(env_prefix="LLMLOOM_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis holding the queues and the results."""
    kubeconfig: str | None = None
    """Kubeconfig file; unset means $KUBECONFIG, ~/.kube/config, then in-cluster."""
    result_ttl_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    """How long stored results live in Redis."""
    file_ttl_seconds: int = Field(default=30 * 24 * 3600, gt=0)
    """How long uploaded files and batches' output and error files live in Redis."""
    log_level: str = "INFO"
    release_namespace: str = "llmloom-system"
    """Namespace of the LLMLoom release: where shared models (ClusterFlavors) run their
    pods and workers, and where their API-key Secrets live."""


class OperatorSettings(CommonSettings):
    """Settings of the operator."""

    namespace: str | None = None
    """Watch only this namespace; unset watches all."""
    flavor_grace_seconds: float = Field(default=30.0, ge=0)
    """How long a job waits for its Flavor to appear before it fails (GitOps
    tools apply resources in no particular order)."""
    flavor_resync_seconds: float = Field(default=10.0, gt=0)
    """How often each flavor's pods, queue and scale are reconciled."""
    endpoint_check_seconds: float = Field(default=60.0, gt=0)
    """How often an external flavor's endpoint is checked."""
    job_resync_seconds: float = Field(default=5.0, gt=0)
    """How often jobs are checked for deadlines, TTLs and lost queue entries."""
    max_attempts: int = Field(default=3, ge=1)
    """Attempts a job gets when its worker is lost before it fails with WorkerLost."""
    metrics_port: int = Field(default=8080, ge=0, le=65535)
    """Port of the Prometheus /metrics endpoint (0 turns it off)."""
    metrics_host: str = "0.0.0.0"
    """Address the /metrics endpoint listens on (in a pod, every interface: Prometheus
    scrapes the pod's IP; the dev stack uses loopback)."""
    liveness_port: int = Field(default=0, ge=0, le=65535)
    """Port of kopf's liveness endpoint (``/healthz``), answered on the operator's own
    event loop, so a stuck loop fails the probe (the metrics thread would not); 0: off."""
    liveness_host: str = "0.0.0.0"
    worker_image: str = "llmloom/worker:0.1.0"
    """Image of the worker container in flavor pods."""
    worker_service_account: str = "llmloom-worker"
    """Service account of flavor pods, created with its RoleBinding in each namespace
    with a flavor (reads jobs, flavors and API keys there, writes job status)."""
    worker_cluster_role: str = "llmloom-worker"
    """ClusterRole the workers' RoleBinding grants (the chart creates it)."""
    worker_redis_url: str | None = None
    """Redis URL given to workers; defaults to redis_url."""
    worker_document_allowed_networks: list[str] = Field(default_factory=list)
    """Networks document URLs may reach although not public, given to workers
    (``document_allowed_networks``)."""
    batch_resync_seconds: float = Field(default=1.0, gt=0)
    """How often every unfinished batch is looked at: its lines' progress goes into its
    status (one write at most per pass), its lost lines are queued again."""
    batch_max_active_jobs: int = Field(default=1000, ge=1)
    """Lines of one batch queued and not ended at most; the next ones are queued as these
    end (a batch of 50,000 lines does not flood its flavor's queue)."""


class WorkerSettings(CommonSettings):
    """Settings of a worker."""

    queues: list[str] = Field(default_factory=list)
    """RQ queues to take jobs from, as namespace/flavor."""
    burst: bool = False
    """Stop when the queues are empty (tests and one-off runs)."""
    endpoint: str | None = None
    """Model server to call instead of the flavor's endpoint: the server beside the
    worker in a self-hosted flavor's pod."""
    wait_for_model: bool = False
    """Before taking jobs, wait until the model server answers (Ollama: pull the model)."""
    lease_seconds: float = Field(default=10.0, gt=0)
    """Lifetime of the lease a worker renews while it runs a job; once it lapses, the
    operator takes the worker for dead and enqueues the job again."""
    concurrency: int | None = Field(default=None, ge=1, le=1024)
    """Jobs in flight at once in this process; unset: the flavor's ``spec.concurrency``."""
    shutdown_grace_seconds: float = Field(default=25.0, ge=0)
    """On SIGTERM, how long running jobs may take to finish before they are handed back
    to the queue (keep it under the pod's terminationGracePeriodSeconds)."""
    flavor_cache_seconds: float = Field(default=5.0, ge=0)
    """How long a flavor or API key read from the API server is used before it is read
    again (an edit or a rotated key reaches running workers within this time)."""
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    """How often the worker and its running jobs' RQ records are marked alive."""
    running_status_after_seconds: float = Field(default=2.0, ge=0)
    """A first attempt is marked Running in the job's status once it has run this long:
    a job done sooner goes from Pending to Succeeded with one status write instead of
    two (most chat answers). Later attempts are marked at once."""
    ready_file: str | None = None
    """File created once the worker takes jobs (the pod's readiness probe checks it)."""
    document_allowed_networks: list[str] = Field(default_factory=list)
    """Networks (CIDRs) document URLs may reach although they are not public: an
    in-cluster document store, say. Loopback, private, link-local (cloud metadata),
    shared and reserved addresses are refused otherwise."""


class ApiSettings(CommonSettings):
    """Settings of the OpenAI-compatible front door."""

    host: str = "127.0.0.1"
    port: int = 8000
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    """Port of the Prometheus /metrics endpoint, apart from the client-facing port (its
    tenant names and token counts are not for clients); 0 turns it off."""
    metrics_host: str = "0.0.0.0"
    """Address the /metrics endpoint listens on."""
    wait_seconds: float = Field(default=60.0, ge=0)
    """How long a request waits for its result before answering 202 with a task id."""
    max_wait_seconds: float = Field(default=600.0, ge=0)
    """Upper bound on the wait a client may ask for."""
    request_job_ttl_seconds: int = Field(default=300, ge=0)
    """How long the LLMJob of an OpenAI request stays after it finished (the operator then
    deletes it; its task and result stay readable for the results' lifetime)."""
    stream_keepalive_seconds: float = Field(default=15.0, gt=0)
    """How often a streamed answer that waits (in the queue, say) sends a comment line:
    ingresses and proxies close a stream idle for a minute."""
    max_body_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    """Largest request body accepted; larger ones are answered 413."""
    requests_per_minute: int | None = Field(default=None, ge=1)
    """Requests per minute a tenant may make (chat, embeddings, jobs) where its Namespace's
    llmloom.io/requests-per-minute annotation does not say; unset: no limit."""
    tokens_per_minute: int | None = Field(default=None, ge=1)
    """Tokens per minute a tenant may spend (llmloom.io/tokens-per-minute); unset: no limit."""
    token_budget: int | None = Field(default=None, ge=0)
    """Tokens a tenant may spend per budget period (llmloom.io/token-budget); unset: no
    budget."""
    token_budget_period: Literal["month", "day"] = "month"
    """The calendar period (UTC) a budget covers (llmloom.io/token-budget-period)."""
    limits_cache_seconds: float = Field(default=10.0, ge=0)
    """How long a tenant's limits are used before its Namespace is read again."""
