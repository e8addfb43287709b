"""The LLMLoom stack a side-by-side bench measures, as separate processes.

A real control plane (etcd, kube-apiserver, controller-manager, scheduler, a
kwok node), Redis, the fault server as the model server, and ``llmloom
operator``, ``llmloom api`` and ``llmloom worker`` each as its own process, as
in a cluster. ``Stack`` also reads what the bench reports: the CPU time of
every process (``/proc``) and the API server's own request counters
(``apiserver_request_total`` on its ``/metrics``).

    with Stack(ttl=30) as stack:
        stack.flavor("paced", stack.faults.endpoint("delay/0.05"), concurrency=64)
        stack.start_llmloom(queues=["paced"])
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml
from peers import cpu_seconds, session_pids

from devstack.cluster import Cluster
from devstack.faultserver import FaultServer
from devstack.procs import Proc, free_port, wait_for
from devstack.redisserver import RedisServer
from devstack.stack import SYSTEM_NAMESPACE, create_token, install_crds, install_rbac

NS = "bench"
PY = [sys.executable, "-m", "llmloom.cli"]

_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')

RequestKey = tuple[str, str, str, str]
"""(verb, resource[/subresource], code, group) of an API-server request."""


def api_requests(text: str) -> Counter[RequestKey]:
    """``apiserver_request_total`` from a /metrics page, by verb, resource, code and group
    (WATCH and the other long-running verbs count once when they start)."""
    out: Counter[RequestKey] = Counter()
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None:
            continue
        labels = dict(_LABEL.findall(m["labels"]))
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        key = (labels.get("verb", ""), resource, labels.get("code", ""), labels.get("group", ""))
        out[key] += int(float(m["value"]))
    return out


def chat_batch(model: str, ids: list[str]) -> bytes:
    """A Batch API input file of chat requests, one per id (its custom_id, and the user
    message, so an echoing model answers with it)."""
    return "".join(
        json.dumps(
            {
                "custom_id": i,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": model, "messages": [{"role": "user", "content": i}]},
            }
        )
        + "\n"
        for i in ids
    ).encode()


class Stack:
    """The stack, started by the constructor; ``close()`` (or the ``with`` block's end)
    stops everything and removes its state."""

    def __init__(
        self, ttl: int = 300, env: dict[str, str] | None = None, persist_redis: bool = False
    ) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="llmloom-bench-"))
        self.cluster = Cluster(gpu_nodes=0, cpu_nodes=1)
        self.procs: list[Proc] = []
        try:
            self.redis = RedisServer(self.work / "redis", persist=persist_redis)
            self.faults = FaultServer(self.work)
            install_crds(self.cluster)
            install_rbac(self.cluster)
            self.cluster.kubectl("create", "namespace", NS)
            self.env = {
                **self.cluster.env(),
                "LLMLOOM_REDIS_URL": self.redis.url,
                "LLMLOOM_KUBECONFIG": str(self.cluster.kubeconfig),
                "LLMLOOM_LOG_LEVEL": "WARNING",
                "LLMLOOM_METRICS_PORT": "0",
                "LLMLOOM_REQUEST_JOB_TTL_SECONDS": str(ttl),
                **(env or {}),
            }
            self.token = create_token(self.cluster.kubeconfig, NS, "bench")
        except BaseException:
            self.close()
            raise
        self.url = ""

    def flavor(self, name: str, endpoint: str, concurrency: int = 64) -> None:
        """An external OpenAI-compatible flavor in the bench namespace."""
        manifest = {
            "apiVersion": "llmloom.io/v1alpha1",
            "kind": "Flavor",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "provider": "openai",
                "model": "echo",
                "endpoint": endpoint,
                "concurrency": concurrency,
            },
        }
        self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

    def _as(self, namespace: str, account: str) -> dict[str, str]:
        """The environment of a component that runs as a ServiceAccount, as in a cluster
        (its token, not the bench's admin certificate)."""
        path = self.cluster.service_account_kubeconfig(namespace, account, hours=2)
        return {**self.env, "LLMLOOM_KUBECONFIG": str(path)}

    def start_llmloom(self, queues: list[str], workers: int = 1) -> None:
        """The operator, the API (``url``) and ``workers`` worker processes for ``queues``
        (flavors of the bench namespace, or one shared model's ``name@*``), each as the
        chart's ServiceAccount (the worker's is the one the operator makes in the
        flavor's namespace, or in the release's for a shared model)."""
        port = free_port()
        operator_env = self._as(SYSTEM_NAMESPACE, "llmloom-operator")
        self.procs.append(Proc("operator", [*PY, "operator"], self.work, operator_env))
        api_env = self._as(SYSTEM_NAMESPACE, "llmloom-api")
        self.procs.append(Proc("api", [*PY, "api", "--port", str(port)], self.work, api_env))
        worker_env: dict[str, str] = {}
        shared = any(q.endswith("@*") for q in queues)
        home = SYSTEM_NAMESPACE if shared else NS

        def worker_account() -> bool:
            try:
                worker_env.update(self._as(home, "llmloom-worker"))
            except httpx.HTTPError:
                return False  # the operator has not made it yet
            return True

        wait_for(worker_account, 60, "the worker's ServiceAccount")
        for _ in range(workers):
            self.worker(queues, worker_env)
        self.url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{self.url}/readyz").is_success, 120, "the API")

    def worker(self, queues: list[str], env: dict[str, str] | None = None) -> Proc:
        """One more worker process for ``queues`` (as ``start_llmloom`` names them), as the
        worker ServiceAccount of their namespace (which the operator has made)."""
        shared = any(q.endswith("@*") for q in queues)
        names = [q if shared else f"{NS}/{q}" for q in queues]
        env = env or self._as(SYSTEM_NAMESPACE if shared else NS, "llmloom-worker")
        cmd = [*PY, "worker", *(a for n in names for a in ("--queue", n))]
        proc = Proc(f"worker-{len(self.procs)}", cmd, self.work, env)
        self.procs.append(proc)
        return proc

    def proc(self, name: str) -> Proc:
        """A process of the stack by name: operator, api, worker-N, redis, or a part of
        the control plane (kube-apiserver, etcd...)."""
        if name == "redis":
            return self.redis.proc
        for p in [*self.procs, *self.cluster.procs]:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def pids(self) -> dict[str, list[int]]:
        """Every process of the stack but the model server, by name (with its children)."""
        out = {p.name: session_pids(p.popen.pid) for p in self.procs}
        for p in self.cluster.procs:
            out[p.name] = session_pids(p.popen.pid)
        out["redis"] = session_pids(self.redis.proc.popen.pid)
        return out

    def backend_pids(self) -> list[int]:
        return session_pids(self.faults.proc.popen.pid)

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far, by process name."""
        return {name: cpu_seconds(pids) for name, pids in self.pids().items()}

    def api_requests(self) -> Counter[RequestKey]:
        """The API server's request counters now."""
        r = self.cluster.http.get("/metrics")
        r.raise_for_status()
        return api_requests(r.text)

    def count(self, plural: str) -> int:
        """How many objects of an llmloom.io kind the bench namespace holds."""
        path = f"/apis/llmloom.io/v1alpha1/namespaces/{NS}/{plural}"
        items: list[Any] = self.cluster.http.get(path).json()["items"]
        return len(items)

    def close(self) -> None:
        for p in self.procs:
            p.stop()
        for part in ("faults", "redis"):
            server = getattr(self, part, None)
            if server is not None:
                server.stop()
        self.cluster.stop()

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
