"""How fast the operator accepts a burst of jobs, and how much memory it needs.

Starts the local control plane and Redis, runs ``llmloom operator`` as its own
process, applies N LLMJobs at once with ``kubectl apply --server-side`` and
waits until every one is Accepted and on its queue. Prints a table.

    .venv/bin/python bench/operator_scale.py [--jobs 2000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml
from redis import Redis

from devstack.cluster import Cluster
from devstack.procs import Proc, peak_rss_mib, wait_for
from devstack.redisserver import RedisServer
from devstack.stack import install_crds
from llmloom import queues

NAMESPACE = "bench"


def manifests(n: int) -> str:
    docs = [
        {
            "apiVersion": "llmloom.io/v1alpha1",
            "kind": "Flavor",
            "metadata": {"name": "bulk", "namespace": NAMESPACE},
            "spec": {"provider": "openai", "model": "m", "endpoint": "http://127.0.0.1:9/v1"},
        }
    ]
    for i in range(n):
        docs.append(
            {
                "apiVersion": "llmloom.io/v1alpha1",
                "kind": "LLMJob",
                "metadata": {"name": f"job-{i:05d}", "namespace": NAMESPACE},
                "spec": {"flavor": "bulk", "messages": [{"role": "user", "content": f"item {i}"}]},
            }
        )
    return "\n---\n".join(yaml.safe_dump(d) for d in docs)


def accepted(cluster: Cluster) -> int:
    items = cluster.http.get(f"/apis/llmloom.io/v1alpha1/namespaces/{NAMESPACE}/llmjobs").json()[
        "items"
    ]
    return sum(
        any(
            c["type"] == "Accepted" and c["status"] == "True"
            for c in i.get("status", {}).get("conditions", [])
        )
        for i in items
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=2000)
    n = ap.parse_args().jobs
    work = Path(tempfile.mkdtemp(prefix="llmloom-bench-"))
    cluster = Cluster(gpu_nodes=0, cpu_nodes=1)
    redis = RedisServer(work / "redis")
    operator: Proc | None = None
    try:
        install_crds(cluster)
        cluster.kubectl("create", "namespace", NAMESPACE)
        env = {
            **cluster.env(),
            "LLMLOOM_REDIS_URL": redis.url,
            "LLMLOOM_KUBECONFIG": str(cluster.kubeconfig),
            "LLMLOOM_METRICS_PORT": "0",
            "LLMLOOM_LOG_LEVEL": "WARNING",
        }
        operator = Proc("operator", [sys.executable, "-m", "llmloom.cli", "operator"], work, env)
        time.sleep(5)  # kopf's initial listing and watches
        rss_idle = peak_rss_mib(operator.popen.pid)
        text = manifests(n)
        t0 = time.monotonic()
        cluster.kubectl("apply", "--server-side", "-f", "-", input=text)
        t_applied = time.monotonic() - t0
        wait_for(
            lambda: operator.check_alive() and accepted(cluster) == n,
            1800,
            f"{n} Accepted jobs",
            interval=1.0,
        )
        t_accepted = time.monotonic() - t0
        depth = queues.depth(Redis.from_url(redis.url), NAMESPACE, "bulk")
        rss_peak = peak_rss_mib(operator.popen.pid)
    finally:
        if operator is not None:
            operator.stop()
        redis.stop()
        cluster.stop()
    rows = [
        ("jobs applied at once", f"{n}"),
        ("kubectl apply --server-side", f"{t_applied:.1f} s"),
        ("until all Accepted and enqueued", f"{t_accepted:.1f} s"),
        ("throughput", f"{n / t_accepted:.0f} jobs/s"),
        ("jobs on the flavor's queue", f"{depth.pending}"),
        ("operator peak RSS, idle", f"{rss_idle:.0f} MiB"),
        ("operator peak RSS, after the burst", f"{rss_peak:.0f} MiB"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"| {'what'.ljust(width)} | value |\n|{'-' * (width + 2)}|-------|")
    for what, value in rows:
        print(f"| {what.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()
