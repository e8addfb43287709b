"""``llmloom dev``: the whole stack on one machine, until Ctrl-C.

Starts the control plane (building its binaries first when missing), Redis,
the small model, then the operator, API and a worker as child processes;
installs the CRDs and the example flavor into the tenant namespace ``demo``,
creates an API token, and writes ``<state>/dev.env`` for clients.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Protocol

import httpx
import yaml

from llmloom import apitokens
from llmloom.devstack.cluster import REPO, Cluster
from llmloom.devstack.embedserver import MODEL_NAME as EMBED_MODEL
from llmloom.devstack.embedserver import EmbedServer
from llmloom.devstack.modelserver import MODEL_NAME, ModelServer
from llmloom.devstack.procs import Proc, wait_for
from llmloom.devstack.redisserver import RedisServer
from llmloom.kube import Kube

TENANT = "demo"
FLAVOR = "smollm2"
EMBED_FLAVOR = "minilm"


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


def local_flavor(example: str, namespace: str, endpoint: str) -> dict[str, object]:
    """An example flavor of a local model, pointed at this stack's server of it."""
    doc = yaml.safe_load((REPO / "examples" / example).read_text())
    doc["metadata"]["namespace"] = namespace
    doc["spec"]["endpoint"] = endpoint
    result: dict[str, object] = doc
    return result


def create_token(kubeconfig: Path, namespace: str, name: str) -> str:
    async def main() -> str:
        kube = Kube.connect(str(kubeconfig))
        try:
            return await apitokens.create(kube, namespace, name, "llmloom dev")
        finally:
            await kube.aclose()

    return asyncio.run(main())


def run_dev(
    state: Path, api_port: int = 8000, model_port: int = 8081, embed_port: int = 8082
) -> None:
    """Run the dev stack in the foreground; stop everything on SIGINT or SIGTERM."""
    state = state.resolve()
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    started: list[Stoppable] = []
    try:
        step(
            "control plane: etcd, kube-apiserver, controller-manager, scheduler, kwok "
            "(the first run builds the binaries: 15-30 minutes)"
        )
        t0 = time.monotonic()
        cluster = Cluster()
        started.append(cluster)
        step(f"control plane ready in {time.monotonic() - t0:.1f}s at {cluster.server}")
        install_crds(cluster)
        step("redis-server")
        redis = RedisServer(state / "redis")
        started.append(redis)
        step(f"model server: {MODEL_NAME} on llama.cpp (CPU)")
        model = ModelServer(logs, port=model_port)
        started.append(model)
        step(f"embedding server: {EMBED_MODEL} on onnxruntime (CPU)")
        embedder = EmbedServer(logs, port=embed_port)
        started.append(embedder)
        cluster.kubectl("create", "namespace", TENANT)
        cluster.apply(
            local_flavor("flavor-smollm2-local.yaml", TENANT, model.url),
            local_flavor("flavor-minilm-local.yaml", TENANT, embedder.url),
        )
        env = {
            **cluster.env(),
            "LLMLOOM_REDIS_URL": redis.url,
            "LLMLOOM_KUBECONFIG": str(cluster.kubeconfig),
        }
        py = [sys.executable, "-P", "-m", "llmloom.cli"]
        step("operator, API and worker")
        procs = [
            Proc("operator", [*py, "operator"], logs, env),
            Proc("api", [*py, "api", "--port", str(api_port)], logs, env),
            Proc(
                "worker",
                [
                    *py,
                    "worker",
                    "--queue",
                    f"{TENANT}/{FLAVOR}",
                    "--queue",
                    f"{TENANT}/{EMBED_FLAVOR}",
                ],
                logs,
                env,
            ),
        ]
        started.extend(procs)
        api_url = f"http://127.0.0.1:{api_port}"
        wait_for(
            lambda: procs[1].check_alive() and httpx.get(f"{api_url}/healthz").is_success,
            60,
            "the API",
        )
        token = create_token(cluster.kubeconfig, TENANT, "dev-token")
        # `export` lines: `source .llmloom/dev.env` then reaches kubectl and SDKs too.
        (state / "dev.env").write_text(
            f"export LLMLOOM_API_URL={api_url}/v1\nexport LLMLOOM_TOKEN={token}\n"
            f"export KUBECONFIG={cluster.kubeconfig}\n"
        )
        print(
            f"""
LLMLoom is running. Tenant namespace: {TENANT}, models: {FLAVOR} (chat), {EMBED_FLAVOR} (embeddings)
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
Ctrl-C stops everything.""",
            flush=True,
        )
        while not stopping.wait(1.0):
            for proc in procs:
                if not proc.alive():
                    raise RuntimeError(f"{proc.name} exited:\n{proc.tail(30)}")
    except KeyboardInterrupt:
        pass
    finally:
        step("stopping")
        for item in reversed(started):
            item.stop()
        (state / "dev.env").unlink(missing_ok=True)
