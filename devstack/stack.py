"""``make dev``: the whole stack on one machine, until Ctrl-C.

Starts the control plane (building its binaries first when missing), Redis,
the small chat and embedding models, the operator and the API, each running as
the chart's ServiceAccount would; installs the CRDs, the chart's RBAC and the
example flavors into the tenant namespace ``demo``; creates an API token; and
writes ``<state>/dev.env`` for clients.

Then it plays the cluster's part: the worker of every flavor's pod runs here
(``kubelet``), in any namespace, for flavors applied before or after it
started, and stops when its pod goes; a process that dies is started again
with a back-off (``supervisor``), and the rest of the stack and its data stay.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol

import httpx
import yaml

from devstack.cluster import REPO, Cluster
from devstack.embedserver import MODEL_NAME as EMBED_MODEL
from devstack.embedserver import EmbedServer
from devstack.kubelet import LocalWorker, PodWatch
from devstack.modelserver import MODEL_NAME, ModelServer
from devstack.ollama import TOOLS_MODEL, RealOllama
from devstack.procs import Proc, free_port, wait_for
from devstack.redisserver import RedisServer
from devstack.supervisor import Supervisor
from llmloom import apitokens
from llmloom.kube import Kube

TENANT = "demo"
FLAVOR = "smollm2"
EMBED_FLAVOR = "minilm"
TOOLS_FLAVOR = "smollm2-tools"
SYSTEM_NAMESPACE = "llmloom-system"
LOOPBACK = '["127.0.0.0/8", "::1/128"]'
"""``LLMLOOM_DOCUMENT_ALLOWED_NETWORKS`` of the dev stack's and the tests' workers: their
document servers listen on this machine."""
CHART = REPO / "charts" / "llmloom"
PY = [sys.executable, "-m", "llmloom.cli"]
TOKEN_HOURS = 24 * 7
"""Lifetime of the ServiceAccount tokens the stack's components run with (a dev
session may last days; a pod's projected token would be refreshed instead)."""


class Stoppable(Protocol):
    def stop(self) -> None: ...


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def install_crds(cluster: Cluster) -> None:
    """Apply the checked-in CRDs and wait until the API server serves them."""
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/flavors.llmloom.io",
        "crd/llmjobs.llmloom.io",
        "crd/llmbatches.llmloom.io",
    )


def install_rbac(cluster: Cluster, namespace: str = SYSTEM_NAMESPACE) -> None:
    """The chart's ServiceAccounts and roles, rendered by helm and applied, so that the
    components run with exactly the permissions a cluster would give them."""
    rendered = subprocess.run(
        [
            str(cluster.bin / "helm"),
            "template",
            "llmloom",
            str(CHART),
            "--namespace",
            namespace,
            "--kube-version",
            "1.36.3",
            "--show-only",
            "templates/rbac.yaml",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("apply", "-f", "-", input=rendered)


def local_flavor(example: str, namespace: str, endpoint: str) -> dict[str, object]:
    """An example flavor of a local model, pointed at this stack's server of it."""
    doc = yaml.safe_load((REPO / "examples" / example).read_text())
    doc["metadata"]["namespace"] = namespace
    doc["spec"]["endpoint"] = endpoint
    result: dict[str, object] = doc
    return result


def ollama_flavor(name: str, namespace: str, endpoint: str) -> dict[str, object]:
    """The Ollama flavor of the dev stack: SmolLM2 with a template that takes tools."""
    return {
        "apiVersion": "llmloom.io/v1alpha1",
        "kind": "Flavor",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "provider": "ollama",
            "model": TOOLS_MODEL,
            "endpoint": endpoint,
            "capabilities": ["chat", "embeddings"],
            "maxOutputTokens": 256,
            "concurrency": 2,
        },
    }


def create_token(kubeconfig: Path, namespace: str, name: str) -> str:
    """An API token of the tenant ``namespace`` (its APIToken created with ``kubeconfig``)."""

    async def main() -> str:
        kube = Kube.connect(str(kubeconfig))
        try:
            return await apitokens.create(kube, namespace, name, "llmloom dev")
        finally:
            await kube.aclose()

    return asyncio.run(main())


def port_taken(port: int) -> bool:
    """Whether something listens on the loopback port already."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def check_ports(ports: dict[str, int]) -> None:
    """Refuse to start, naming the port, when one the stack needs is in use."""
    taken = [f"{port} ({what})" for what, port in ports.items() if port_taken(port)]
    if taken:
        which = f"port {taken[0]} is" if len(taken) == 1 else f"ports {', '.join(taken)} are"
        raise SystemExit(
            f"{which} in use on 127.0.0.1: another `make dev` or another "
            "program holds it. Stop it, or choose other ports: "
            'make dev ARGS="--port 9000 --model-port 9081 --embed-port 9082"'
        )


@contextlib.contextmanager
def single_instance(state: Path) -> Iterator[None]:
    """One dev stack per state folder: a second one would share its files."""
    lock_path = state / "dev.lock"
    handle: IO[str] = lock_path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        raise SystemExit(
            f"another `make dev` runs from {state} (pid {holder}); stop it first (Ctrl-C)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


class Workers:
    """The local worker processes of the flavors' pods, matched to what the pods ask."""

    def __init__(
        self,
        cluster: Cluster,
        env: dict[str, str],
        logs: Path,
        run: Path,
        supervisor: Supervisor,
    ) -> None:
        self.cluster, self.env, self.logs, self.run = cluster, env, logs, run
        self.supervisor = supervisor
        self.procs: dict[str, Proc] = {}
        self.waiting: dict[str, str] = {}
        """Pods whose worker cannot start yet, and why (said once)."""

    def match(self, wanted: dict[str, LocalWorker]) -> None:
        for key in [k for k in self.procs if k not in wanted]:
            proc = self.procs.pop(key)
            self.supervisor.forget(proc)
            proc.stop(timeout=30)
            step(f"worker of pod {key} stopped (the pod is gone)")
        for key, worker in wanted.items():
            if key not in self.procs:
                self._start(worker)

    def _start(self, worker: LocalWorker) -> None:
        try:
            kubeconfig = self.cluster.service_account_kubeconfig(
                worker.namespace, worker.service_account, hours=TOKEN_HOURS
            )
        except httpx.HTTPError as exc:  # the operator has not made the account yet
            why = f"no token for ServiceAccount {worker.service_account}: {exc}"
            if self.waiting.get(worker.key) != why:
                self.waiting[worker.key] = why
                step(f"worker of pod {worker.key} waits: {why}")
            return
        self.waiting.pop(worker.key, None)
        env = {
            **self.env,
            **dict(worker.env),
            "LLMLOOM_KUBECONFIG": str(kubeconfig),
            "LLMLOOM_READY_FILE": str(self.run / f"{worker.namespace}.{worker.pod}.ready"),
        }
        name = f"worker-{worker.namespace}-{worker.pod}"
        proc = Proc(name, [*PY, *worker.args], self.logs, env)
        self.procs[worker.key] = self.supervisor.watch(proc)
        step(f"worker of pod {worker.key} started for {', '.join(worker.queues)}")
        if worker.model_server:
            endpoint = dict(worker.env).get("LLMLOOM_ENDPOINT", "its pod")
            step(
                f"its flavor runs its own model server ({worker.model_server}) on GPU nodes, "
                f"which cannot run here: the worker waits for {endpoint}. To serve the model "
                "in make dev, give a flavor spec.endpoint (a server this machine reaches) "
                "instead of spec.deploy."
            )

    def stop(self) -> None:
        for proc in self.procs.values():
            self.supervisor.forget(proc)
        for proc in self.procs.values():
            proc.stop(timeout=30)


def run_dev(
    state: Path, api_port: int = 8000, model_port: int = 8081, embed_port: int = 8082
) -> None:
    """Run the dev stack in the foreground; stop everything on SIGINT or SIGTERM."""
    state = state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    with single_instance(state):
        check_ports({"the API": api_port, "the chat model": model_port, "embeddings": embed_port})
        _run(state, api_port, model_port, embed_port)


def _run(state: Path, api_port: int, model_port: int, embed_port: int) -> None:
    logs, run = state / "logs", state / "run"
    logs.mkdir(parents=True, exist_ok=True)
    run.mkdir(parents=True, exist_ok=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    supervisor = Supervisor(step)
    started: list[Stoppable] = []
    try:
        step(
            "control plane: etcd, kube-apiserver, controller-manager, scheduler, kwok "
            "(the first run builds the binaries: 15-30 minutes)"
        )
        t0 = time.monotonic()
        cluster = Cluster()
        started.append(cluster)
        for proc in cluster.procs:
            supervisor.watch(proc)
        step(f"control plane ready in {time.monotonic() - t0:.1f}s at {cluster.server}")
        install_crds(cluster)
        install_rbac(cluster)
        step("redis-server (append-only file in the state folder)")
        # A new stack, a new cluster: yesterday's queues and results name nothing now.
        shutil.rmtree(state / "redis", ignore_errors=True)
        redis = RedisServer(state / "redis", persist=True)
        started.append(redis)
        supervisor.watch(redis.proc)
        step(f"model server: {MODEL_NAME} on llama.cpp (CPU)")
        model = ModelServer(logs, port=model_port)
        started.append(model)
        supervisor.watch(model.proc)
        step(f"embedding server: {EMBED_MODEL} on onnxruntime (CPU)")
        embedder = EmbedServer(logs, port=embed_port)
        started.append(embedder)
        supervisor.watch(embedder.proc)
        step("Ollama 0.12.6 (the real one) serving the same SmolLM2, with tools")
        ollama = RealOllama(state / "ollama")
        started.append(ollama)
        supervisor.watch(ollama.proc)
        cluster.kubectl("create", "namespace", TENANT)
        cluster.apply(
            local_flavor("flavor-smollm2-local.yaml", TENANT, model.url),
            local_flavor("flavor-minilm-local.yaml", TENANT, embedder.url),
            ollama_flavor(TOOLS_FLAVOR, TENANT, ollama.url),
        )
        # Workers may fetch documents from this machine (refused by default).
        env = {
            **cluster.env(),
            "LLMLOOM_REDIS_URL": redis.url,
            "LLMLOOM_DOCUMENT_ALLOWED_NETWORKS": LOOPBACK,
        }

        def account(name: str) -> dict[str, str]:
            path = cluster.service_account_kubeconfig(SYSTEM_NAMESPACE, name, hours=TOKEN_HOURS)
            return {**env, "LLMLOOM_KUBECONFIG": str(path)}

        step("operator and API, as the chart's ServiceAccounts")
        operator_env = {
            **account("llmloom-operator"),
            # Loopback and a free port: a second stack, or anything on 8080, is no clash.
            "LLMLOOM_METRICS_HOST": "127.0.0.1",
            "LLMLOOM_METRICS_PORT": str(free_port()),
        }
        operator = supervisor.watch(Proc("operator", [*PY, "operator"], logs, operator_env))
        api_env = {
            **account("llmloom-api"),
            "LLMLOOM_METRICS_HOST": "127.0.0.1",
            "LLMLOOM_METRICS_PORT": str(free_port()),
        }
        api = supervisor.watch(Proc("api", [*PY, "api", "--port", str(api_port)], logs, api_env))
        started += [operator, api]
        api_url = f"http://127.0.0.1:{api_port}"
        wait_for(
            lambda: api.check_alive() and httpx.get(f"{api_url}/healthz").is_success,
            60,
            "the API",
        )
        workers = Workers(cluster, env, logs, run, supervisor)
        started.append(workers)
        pods = PodWatch(_admin_http(cluster), step)
        pods.start()
        token = create_token(cluster.kubeconfig, TENANT, "dev-token")
        _write_env(state / "dev.env", api_url, token, cluster)
        _welcome(api_url, token, cluster, logs, state)
        while not stopping.wait(0.5):
            supervisor.tick()
            workers.match(pods.workers())
        pods.stop()
    except KeyboardInterrupt:
        pass
    finally:
        step("stopping")
        for item in reversed(started):
            with contextlib.suppress(Exception):
                item.stop()
        (state / "dev.env").unlink(missing_ok=True)


def _admin_http(cluster: Cluster) -> httpx.Client:
    """An admin client of its own for the pod watch's thread."""
    ctx = ssl.create_default_context(cafile=str(cluster.pki / "ca.crt"))
    ctx.load_cert_chain(str(cluster.pki / "admin.crt"), str(cluster.pki / "admin.key"))
    return httpx.Client(base_url=cluster.server, verify=ctx, timeout=10)


def _write_env(path: Path, api_url: str, token: str, cluster: Cluster) -> None:
    # `export` lines: `source .llmloom/dev.env` then reaches kubectl and SDKs too, and the
    # kubectl built for this control plane comes first on PATH.
    path.write_text(
        f"export LLMLOOM_API_URL={api_url}/v1\nexport LLMLOOM_TOKEN={token}\n"
        f"export KUBECONFIG={cluster.kubeconfig}\n"
        f'export PATH="{cluster.bin}:$PATH"\n'
    )


def _welcome(api_url: str, token: str, cluster: Cluster, logs: Path, state: Path) -> None:
    print(
        f"""
LLMLoom is running. Tenant namespace: {TENANT}, models: {FLAVOR} (chat, on llama.cpp),
  {EMBED_FLAVOR} (embeddings), {TOOLS_FLAVOR} (chat with tools and images, on Ollama)
  API:        {api_url}/v1
  token:      {token}
  KUBECONFIG: {cluster.kubeconfig}
  logs:       {logs}
Written to {state / "dev.env"}; try:
  source {state / "dev.env"}
  kubectl get llmloom -n {TENANT}
  curl -s $LLMLOOM_API_URL/chat/completions -H "Authorization: Bearer $LLMLOOM_TOKEN" \\
    -H 'Content-Type: application/json' \\
    -d '{{"model": "{FLAVOR}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'
Flavors you apply (any namespace) get their workers here, as their pods would in a cluster.
A process that dies is started again. Ctrl-C stops everything.""",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m devstack``: the options of ``make dev ARGS=...``."""
    ap = argparse.ArgumentParser(prog="make dev", description="The whole stack, until Ctrl-C.")
    ap.add_argument("--state-dir", default=".llmloom", help="logs, Redis data, dev.env")
    ap.add_argument("--port", type=int, default=8000, help="API port")
    ap.add_argument("--model-port", type=int, default=8081, help="port of the local chat model")
    ap.add_argument("--embed-port", type=int, default=8082, help="port of the embedding model")
    a = ap.parse_args(argv)
    run_dev(Path(a.state_dir), api_port=a.port, model_port=a.model_port, embed_port=a.embed_port)
