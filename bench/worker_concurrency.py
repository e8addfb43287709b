"""How busy one worker process keeps a model server, and what it adds per request.

Starts the local control plane, Redis and a model server that answers after a
fixed delay (the fault server's /delay endpoint, which records when each call
ran), creates N LLMJobs and enqueues them, then starts ONE worker process with
``concurrency`` slots and lets it drain the queue. From the server's timeline:

- slots busy: calls in flight at the server, integrated over the time there
  was work waiting (first call to last call start), over concurrency x time;
- added per request: from RQ's ``started_at`` (the worker took the job) to
  the result's done notification (what the API waits on), minus the call's
  time at the server; compared with the worker's HTTP client (aiohttp) calling
  the server directly at the same concurrency (its time minus the server's).

It also reports the worker's CPU time per job (what bounds one process: it
runs on one core) and its peak memory (VmHWM). Each delay is one row.

    .venv/bin/python bench/worker_concurrency.py [--concurrency 64] [--delays 1 2 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import yaml
from redis import Redis
from rq.job import Job

from devstack.cluster import Cluster
from devstack.faultserver import FaultServer
from devstack.procs import Proc, cpu_seconds, peak_rss_mib, wait_for
from devstack.redisserver import RedisServer
from devstack.stack import install_crds
from llmloom import httpio, queues, results
from llmloom import origin as origins

NS = "bench"
PY = [sys.executable, "-m", "llmloom.cli"]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def busy_fraction(calls: list[tuple[float, float]], slots: int) -> tuple[float, float]:
    """Calls in flight integrated from the first call to the last call's start (while
    work was waiting), over slots x that span; and the span in seconds."""
    begin = min(s for s, _ in calls)
    end = max(s for s, _ in calls)
    busy = sum(max(0.0, min(e, end) - max(s, begin)) for s, e in calls)
    return busy / (slots * (end - begin)), end - begin


def job_manifests(flavor: str, n: int, origin: str) -> str:
    """Jobs as the API makes them for requests (no routine Events), or as a person
    applies them (``kubectl``: a Completed Event each)."""
    labels = {origins.LABEL: origins.API} if origin == "api" else {}
    docs = [
        {
            "apiVersion": "llmloom.io/v1alpha1",
            "kind": "LLMJob",
            "metadata": {"name": f"{flavor}-{i}", "namespace": NS, "labels": labels},
            "spec": {"flavor": flavor, "messages": [{"role": "user", "content": f"{flavor}-{i}"}]},
        }
        for i in range(n)
    ]
    return "\n---\n".join(yaml.safe_dump(d) for d in docs)


class DoneListener(threading.Thread):
    """Records when each job's done notification arrives."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(daemon=True)
        self.pubsub = redis.pubsub()  # type: ignore[no-untyped-call]
        self.pubsub.psubscribe(results.done_channel("*"))
        self.seen: dict[str, float] = {}

    def run(self) -> None:
        with contextlib.suppress(Exception):  # Redis stops at the end of the bench
            for msg in self.pubsub.listen():
                if msg["type"] == "pmessage":
                    uid = msg["channel"].decode().removeprefix(results.done_channel(""))
                    self.seen.setdefault(uid, time.time())


async def direct(url: str, slots: int, n: int) -> dict[str, float]:
    """Call the server directly, ``slots`` at a time, with the HTTP client the worker
    uses (aiohttp: httpx would add 2 ms of its own per call): each call's time."""
    took: dict[str, float] = {}
    todo: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        todo.put_nowait(i)

    async def client(http: aiohttp.ClientSession) -> None:
        while not todo.empty():
            i = todo.get_nowait()
            body = {"model": "echo", "messages": [{"role": "user", "content": f"direct-{i}"}]}
            started = time.time()
            async with http.post(f"{url}/chat/completions", json=body) as r:
                r.raise_for_status()
                await r.read()
            took[f"echo: direct-{i}"] = time.time() - started

    async with httpio.session(slots) as http:
        await asyncio.gather(*(client(http) for _ in range(slots)))
    return took


@dataclass
class Row:
    delay: float
    direct_busy: float
    direct_added: list[float]
    busy: float
    added: list[float]
    before: list[float]
    """From the worker taking the job to the call reaching the server."""
    after: list[float]
    """From the server's answer to the result's done notification."""
    wall: float
    cpu_ms: float
    peak_mib: float


def run_delay(
    cluster: Cluster,
    redis_url: str,
    faults: FaultServer,
    work: Path,
    delay: float,
    a: Any,
) -> Row:
    """The server called directly, then the same number of calls as LLMJobs through one
    worker process."""
    flavor = f"paced-{int(delay * 1000)}"
    endpoint = faults.endpoint(f"delay/{delay}")
    manifest = {
        "apiVersion": "llmloom.io/v1alpha1",
        "kind": "Flavor",
        "metadata": {"name": flavor, "namespace": NS},
        "spec": {
            "provider": "openai",
            "model": "echo",
            "endpoint": endpoint,
            "concurrency": a.concurrency,
        },
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    jobs = a.concurrency * a.waves
    asyncio.run(direct(endpoint, a.concurrency, a.concurrency))  # warm up
    httpx.delete(f"{faults.base}/timeline")
    direct_took = asyncio.run(direct(endpoint, a.concurrency, jobs))
    timeline = httpx.get(f"{faults.base}/timeline").json()
    server_s = {key: end - start for key, start, end in timeline}
    direct_added = [(took - server_s[k]) * 1000 for k, took in direct_took.items()]
    direct_busy, _ = busy_fraction([(s, e) for _, s, e in timeline], a.concurrency)
    httpx.delete(f"{faults.base}/timeline")

    redis = Redis.from_url(redis_url)
    cluster.kubectl("apply", "-f", "-", input=job_manifests(flavor, jobs, a.origin))
    listed = cluster.kubectl("get", "llmjobs", "-n", NS, "-o", "json").stdout
    listener = DoneListener(redis)
    listener.start()
    refs = {}
    for obj in json.loads(listed)["items"]:
        meta = obj["metadata"]
        if obj["spec"]["flavor"] != flavor:
            continue
        ref = queues.JobRef(
            namespace=NS, name=meta["name"], uid=meta["uid"], generation=meta["generation"]
        )
        queues.enqueue(redis, flavor, ref, timeout_seconds=600)
        refs[meta["uid"]] = ref
    env = {
        **cluster.env(),
        "LLMLOOM_REDIS_URL": redis_url,
        "LLMLOOM_KUBECONFIG": str(cluster.kubeconfig),
        "LLMLOOM_LOG_LEVEL": "WARNING",
    }
    started = time.time()
    worker = Proc(f"worker-{flavor}", [*PY, "worker", "--queue", f"{NS}/{flavor}"], work, env)
    try:
        wait_for(lambda: all(u in listener.seen for u in refs), 900, "every job's result")
        wall = time.time() - started
        peak, cpu = peak_rss_mib(worker.popen.pid), cpu_seconds(worker.popen.pid)
    finally:
        worker.stop()
    listener.pubsub.close()
    timeline = httpx.get(f"{faults.base}/timeline").json()
    calls = {key.removeprefix("echo: "): (start, end) for key, start, end in timeline}
    added, before, after = [], [], []
    for uid, ref in refs.items():
        rq_job = Job.fetch(ref.rq_id, connection=redis)
        assert rq_job.started_at is not None
        start, end = calls[ref.name]
        added.append((listener.seen[uid] - rq_job.started_at.timestamp() - (end - start)) * 1000)
        before.append((start - rq_job.started_at.timestamp()) * 1000)
        after.append((listener.seen[uid] - end) * 1000)
    busy, _ = busy_fraction(list(calls.values()), a.concurrency)
    return Row(
        delay, direct_busy, direct_added, busy, added, before, after, wall, cpu * 1000 / jobs, peak
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--delays", type=float, nargs="+", default=[1.0, 2.0, 5.0])
    ap.add_argument("--waves", type=int, default=8, help="jobs = concurrency x waves")
    ap.add_argument("--origin", choices=["api", "kubectl"], default="api", help="who made the jobs")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llmloom-bench-"))
    cluster = Cluster(gpu_nodes=0, cpu_nodes=1)
    redis_server = RedisServer(work / "redis")
    faults = FaultServer(work)
    rows: list[Row] = []
    try:
        install_crds(cluster)
        cluster.kubectl("create", "namespace", NS)
        for delay in a.delays:
            rows.append(run_delay(cluster, redis_server.url, faults, work, delay, a))
    finally:
        faults.stop()
        redis_server.stop()
        cluster.stop()
    print(
        f"one worker process, concurrency {a.concurrency}, {a.concurrency * a.waves} jobs per "
        f"row (LLMJobs made by {a.origin}, on a real API server); {os.cpu_count()} CPUs "
        "shared by everything\n"
    )
    print(
        "| server delay | direct: slots busy | direct: added p50 | worker: slots busy "
        "| worker: added p50 | added p95 | worker over direct, p50 | of which before "
        "/ after the call | worker CPU per job | drained in | peak RSS |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        over = statistics.median(r.added) - statistics.median(r.direct_added)
        print(
            f"| {r.delay * 1000:.0f} ms | {r.direct_busy:.1%} "
            f"| {statistics.median(r.direct_added):.1f} ms | {r.busy:.1%} "
            f"| {statistics.median(r.added):.1f} ms | {pct(r.added, 0.95):.1f} ms "
            f"| {over:.1f} ms | {statistics.median(r.before):.1f} / "
            f"{statistics.median(r.after):.1f} ms "
            f"| {r.cpu_ms:.1f} ms | {r.wall:.1f} s | {r.peak_mib:.0f} MiB |"
        )


if __name__ == "__main__":
    main()
