"""What the API adds to a chat request, and how many it answers per second.

Starts the local control plane, Redis, a model server that answers after a
fixed delay (the fault server's /delay endpoint), the operator, the API and W
worker processes (each with C jobs in flight at most); then sends chat
requests through the API with 1, 16 and 64 concurrent clients. Each request
is a real LLMJob. Overhead is the API's ``X-LLMLoom-Overhead-Ms``: the
request's time minus the provider call's.

    .venv/bin/python bench/api_overhead.py [--workers 1] [--concurrency 64] [--delay 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from devstack.cluster import Cluster
from devstack.faultserver import FaultServer
from devstack.procs import Proc, free_port, wait_for
from devstack.redisserver import RedisServer
from devstack.stack import create_token, install_crds

NS = "bench"
PY = [sys.executable, "-m", "llmloom.cli"]


async def run_level(
    url: str, token: str, clients: int, total: int
) -> tuple[list[float], float, int]:
    """Send ``total`` requests with ``clients`` at a time; overheads (ms), wall time, errors."""
    overheads: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    body = {"model": "paced", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {token}"}

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while not queue.empty():
            queue.get_nowait()
            r = await http.post(f"{url}/v1/chat/completions", json=body, headers=headers)
            if r.status_code == 200:
                overheads.append(float(r.headers["x-llmloom-overhead-ms"]))
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        started = time.monotonic()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return overheads, time.monotonic() - started, errors


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--delay", type=float, default=0.1)
    ap.add_argument("--requests", type=int, default=200)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llmloom-bench-"))
    cluster = Cluster(gpu_nodes=0, cpu_nodes=1)
    redis = RedisServer(work / "redis")
    faults = FaultServer(work)
    procs: list[Proc] = []
    rows = []
    try:
        install_crds(cluster)
        cluster.kubectl("create", "namespace", NS)
        flavor = {
            "apiVersion": "llmloom.io/v1alpha1",
            "kind": "Flavor",
            "metadata": {"name": "paced", "namespace": NS},
            "spec": {
                "provider": "openai",
                "model": "echo",
                "endpoint": faults.endpoint(f"delay/{a.delay}"),
                "concurrency": a.concurrency,
            },
        }
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(flavor))
        env = {
            **cluster.env(),
            "LLMLOOM_REDIS_URL": redis.url,
            "LLMLOOM_KUBECONFIG": str(cluster.kubeconfig),
            "LLMLOOM_LOG_LEVEL": "WARNING",
            "LLMLOOM_METRICS_PORT": "0",
        }
        port = free_port()
        procs.append(Proc("operator", [*PY, "operator"], work, env))
        procs.append(Proc("api", [*PY, "api", "--port", str(port)], work, env))
        for i in range(a.workers):
            procs.append(Proc(f"worker-{i}", [*PY, "worker", "--queue", f"{NS}/paced"], work, env))
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{url}/healthz").is_success, 60, "the API")
        token = create_token(cluster.kubeconfig, NS, "bench")
        asyncio.run(run_level(url, token, 4, 20))  # warm up connections and caches
        for clients in (1, 16, 64):
            total = max(a.requests // (4 if clients == 1 else 1), clients)
            overheads, wall, errors = asyncio.run(run_level(url, token, clients, total))
            rows.append(
                (
                    clients,
                    len(overheads),
                    errors,
                    statistics.median(overheads),
                    pct(overheads, 0.95),
                    pct(overheads, 0.99),
                    len(overheads) / wall,
                )
            )
    finally:
        for p in procs:
            p.stop()
        faults.stop()
        redis.stop()
        cluster.stop()
    print(
        f"provider delay {a.delay * 1000:.0f} ms, {a.workers} worker process(es) of "
        f"concurrency {a.concurrency}, one LLMJob per request\n"
    )
    print("| clients | requests | errors | overhead p50 | p95 | p99 | requests/s |")
    print("|---|---|---|---|---|---|---|")
    for c, n, e, p50, p95, p99, rps in rows:
        print(f"| {c} | {n} | {e} | {p50:.0f} ms | {p95:.0f} ms | {p99:.0f} ms | {rps:.1f} |")


if __name__ == "__main__":
    main()
