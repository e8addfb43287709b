"""The integration tier: a real control plane, Redis, model server, operator, API.

Session fixtures start each part once (the control plane from the binaries
that hack/build-testbed.sh builds); every test gets its own namespace (a
tenant) with an API token. When a test fails, the tail of every process's log
is attached to its report.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from devstack.cluster import REPO, Cluster
from devstack.embedserver import EmbedServer
from devstack.faultserver import FaultServer
from devstack.inprocess import OperatorThread
from devstack.modelserver import ModelServer
from devstack.ollama import RealOllama
from devstack.ollamaserver import OllamaServer
from devstack.procs import Proc, free_port, wait_for
from devstack.redisserver import RedisServer
from devstack.stack import (
    LOOPBACK,
    SYSTEM_NAMESPACE,
    create_token,
    install_crds,
    install_rbac,
)
from llmloom.settings import OperatorSettings

LOG_SOURCES: list[Callable[[], str]] = []
PY = [sys.executable, "-m", "llmloom.cli"]
MAX_BODY_BYTES = 24_000_000
"""The test API's body limit: a 20 MB request goes through, 24 MB does not."""
REQUEST_JOB_TTL_SECONDS = 120
"""How long a request's job stays in the test API (tests look at it after the answer)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and report.when in ("setup", "call"):
        for source in LOG_SOURCES:
            report.sections.append(("process logs", source()))
    return report


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    c = Cluster(gpu_nodes=2)
    LOG_SOURCES.append(c.dump_logs)
    try:
        install_crds(c)
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    LOG_SOURCES.append(lambda: f"===== redis\n{server.proc.tail(20)}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    server = ModelServer(tmp_path_factory.mktemp("model"), ctx=4096, parallel=2)
    LOG_SOURCES.append(lambda: f"===== model server\n{server.proc.tail(20)}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def embed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbedServer]:
    server = EmbedServer(tmp_path_factory.mktemp("embed"))
    LOG_SOURCES.append(lambda: f"===== embedding server\n{server.proc.tail(20)}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultServer]:
    server = FaultServer(tmp_path_factory.mktemp("faults"))
    yield server
    server.stop()


@dataclass
class Identities:
    """Kubeconfigs acting as the chart's ServiceAccounts (least privilege)."""

    operator: Path
    api: Path


@pytest.fixture(scope="session")
def identities(cluster: Cluster) -> Identities:
    """The chart's RBAC, rendered by helm and applied: the components run as its accounts."""
    install_rbac(cluster)
    return Identities(
        operator=cluster.service_account_kubeconfig(SYSTEM_NAMESPACE, "llmloom-operator"),
        api=cluster.service_account_kubeconfig(SYSTEM_NAMESPACE, "llmloom-api"),
    )


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster, redis_server: RedisServer, identities: Identities
) -> Iterator[OperatorThread]:
    settings = OperatorSettings(
        redis_url=redis_server.url,
        kubeconfig=str(identities.operator),
        flavor_grace_seconds=2,
        flavor_resync_seconds=1,
        endpoint_check_seconds=1,
        job_resync_seconds=0.5,
        metrics_port=free_port(),
        liveness_port=free_port(),
        liveness_host="127.0.0.1",
    )
    op = OperatorThread(settings).start()
    yield op
    op.stop()


@dataclass
class Api:
    url: str
    proc: Proc
    metrics_url: str
    """/metrics, on the API's port of its own."""


def start_api(
    cluster: Cluster, redis: RedisServer, identities: Identities, logs: Path, **settings: str
) -> Api:
    """An API process as the chart's ServiceAccount, with the test settings (and these)."""
    port, metrics_port = free_port(), free_port()
    env = {
        **cluster.env(),
        "LLMLOOM_METRICS_HOST": "127.0.0.1",
        "LLMLOOM_METRICS_PORT": str(metrics_port),
        "LLMLOOM_REDIS_URL": redis.url,
        "LLMLOOM_KUBECONFIG": str(identities.api),
        "LLMLOOM_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "LLMLOOM_REQUEST_JOB_TTL_SECONDS": str(REQUEST_JOB_TTL_SECONDS),
        "LLMLOOM_STREAM_KEEPALIVE_SECONDS": "1",
        **settings,
    }
    proc = Proc(f"api-{port}", [*PY, "api", "--port", str(port)], logs, env)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: proc.check_alive() and httpx.get(f"{url}/readyz").is_success, 60, "the API")
    return Api(url=url, proc=proc, metrics_url=f"http://127.0.0.1:{metrics_port}/metrics")


@pytest.fixture(scope="session")
def api(
    cluster: Cluster,
    redis_server: RedisServer,
    operator: OperatorThread,
    identities: Identities,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Api]:
    started = start_api(cluster, redis_server, identities, tmp_path_factory.mktemp("api"))
    LOG_SOURCES.append(lambda: f"===== api\n{started.proc.tail(40)}")
    yield started
    started.proc.stop()


@dataclass
class Tenant:
    namespace: str
    token: str
    cluster: Cluster

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.cluster.kubectl("-n", self.namespace, *args, input=input, check=check).stdout

    def get(self, kind: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = yaml.safe_load(self.kubectl("get", kind, name, "-o", "yaml"))
        return obj


@pytest.fixture
def tenant(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Tenant]:
    name = (
        f"t-{request.node.name[5:30].replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}".lower()
    )
    cluster.kubectl("create", "namespace", name)

    yield Tenant(
        namespace=name, token=create_token(cluster.kubeconfig, name, "test-token"), cluster=cluster
    )
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def flavor_manifest(name: str, endpoint: str, model: str = "smollm2-135m") -> dict[str, Any]:
    return {
        "apiVersion": "llmloom.io/v1alpha1",
        "kind": "Flavor",
        "metadata": {"name": name},
        "spec": {
            "provider": "openai",
            "model": model,
            "endpoint": endpoint,
            "capabilities": ["chat"],
            "maxOutputTokens": 64,
            "timeoutSeconds": 60,
        },
    }


@pytest.fixture
def smollm2(tenant: Tenant, model_server: ModelServer) -> str:
    """A flavor named smollm2 in the tenant, served by the real small model."""
    tenant.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump(flavor_manifest("smollm2", model_server.url))
    )
    return "smollm2"


RUNNING_AT_ONCE = {"LLMLOOM_RUNNING_STATUS_AFTER_SECONDS": "0"}
"""Worker settings for tests that wait to see a job Running (a first attempt is marked
Running only after 2 s by default)."""


@pytest.fixture
def start_worker(
    cluster: Cluster, redis_server: RedisServer, tmp_path: Path
) -> Iterator[Callable[..., Proc]]:
    """Start a worker process (as a pod on a GPU node would run) on the given queues."""
    procs: list[Proc] = []

    def start(*queues: str, env: dict[str, str] | None = None) -> Proc:
        args = [a for q in queues for a in ("--queue", q)]
        # The worker runs as the ServiceAccount the operator made for the flavor's
        # namespace, as a worker container in a flavor's pod does.
        # A shared model's workers (``name@*``) run in the release's namespace.
        namespace = SYSTEM_NAMESPACE if queues[0].endswith("@*") else queues[0].split("/")[0]
        wait_for(
            lambda: (
                cluster.kubectl(
                    "get", "sa", "llmloom-worker", "-n", namespace, check=False
                ).returncode
                == 0
            ),
            30,
            "the operator to create the workers' ServiceAccount",
        )
        kubeconfig = cluster.service_account_kubeconfig(namespace, "llmloom-worker")
        env = {
            **cluster.env(),
            "LLMLOOM_REDIS_URL": redis_server.url,
            "LLMLOOM_KUBECONFIG": str(kubeconfig),
            # Notice lost workers quickly; stop quickly when a test ends.
            "LLMLOOM_LEASE_SECONDS": "2",
            "LLMLOOM_SHUTDOWN_GRACE_SECONDS": "5",
            # Document servers of the tests listen on loopback, refused by default.
            "LLMLOOM_DOCUMENT_ALLOWED_NETWORKS": LOOPBACK,
            **(env or {}),
        }
        proc = Proc(f"worker-{len(procs)}", [*PY, "worker", *args], tmp_path, env)
        procs.append(proc)
        return proc

    def logs() -> str:
        return "\n".join(f"===== {p.name}\n{p.tail(40)}" for p in procs)

    LOG_SOURCES.append(logs)
    yield start
    LOG_SOURCES.remove(logs)
    for proc in procs:
        proc.stop()


EXAMPLES = REPO / "examples"


@pytest.fixture(scope="session")
def ollama_server(
    model_server: ModelServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OllamaServer]:
    """Ollama's native API, served by the project's own server on the real small models."""
    server = OllamaServer(tmp_path_factory.mktemp("ollama"), model_server.url)
    LOG_SOURCES.append(lambda: f"===== ollama server\n{server.proc.tail(20)}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def real_ollama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealOllama]:
    """The real Ollama (built by hack/build-ollama.sh) serving the packaged SmolLM2."""
    server = RealOllama(tmp_path_factory.mktemp("real-ollama"))
    LOG_SOURCES.append(lambda: f"===== ollama\n{server.proc.tail(30)}")
    yield server
    server.stop()


@pytest.fixture
def other_tenant(tenant: Tenant) -> Iterator[Tenant]:
    """A second tenant beside ``tenant``."""
    name = f"{tenant.namespace[:50]}-b{uuid.uuid4().hex[:4]}"
    tenant.cluster.kubectl("create", "namespace", name)

    token = create_token(tenant.cluster.kubeconfig, name, "t")
    yield Tenant(namespace=name, token=token, cluster=tenant.cluster)
    tenant.cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
