"""Whether one tenant's flood starves another tenant on a shared model.

One ClusterFlavor (the fault server answering after 100 ms) is granted to two
tenants and served by one worker process with C slots. Tenant B sends one
chat request a second and waits for each answer:

- alone: nothing else runs;
- with a flood: tenant A has just sent N requests as fast as the API takes
  them (``?wait=0``, answered 202), far faster than the model drains them, and
  B's requests arrive while A's backlog drains; B's queue and A's are served
  in weighted fair order (equal weights), with a reserved slot;
- one queue (no fair sharing, for comparison): the same flood and trickle
  through a Flavor of one namespace, whose single queue is first come, first
  served.

For each of B's requests it measures the wait in the queue (from the RQ
records: enqueued, then taken by the worker; B's own queue only) and the time
before the model saw it (from the client's send to the fault server's start
of that call). It prints the medians and p95 of B's waits, A's requests
answered meanwhile, when A's flood was done (what the reserved slot cost it),
and the ratio of B's median queue wait with the flood to
alone (the bar: 2x at most).

    .venv/bin/python bench/fair_share.py [--flood 2000] [--concurrency 4] [--trickle 15]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass
from datetime import datetime

import aiohttp
import httpx
import yaml
from harness import Stack
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from devstack.procs import wait_for
from devstack.stack import create_token

SHARED = "shared"
LABEL = {"llmloom.io/bench-shared": "yes"}


@dataclass
class Waits:
    """B's waits in one scenario, in ms."""

    queue: list[float]
    before_model: list[float]
    flood_done: int
    """A's requests answered by the time B's last one was."""
    flood_seconds: float
    """From the start of A's flood to the end of its last call at the model."""


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def flood(url: str, token: str, model: str, n: int) -> None:
    """Queue ``n`` chat requests (answered 202 at once), 32 at a time."""
    todo = iter(range(n))
    headers = {"Authorization": f"Bearer {token}"}

    async def sender(http: aiohttp.ClientSession) -> None:
        for i in todo:
            body = {"model": model, "messages": [{"role": "user", "content": f"a-{i}"}]}
            async with http.post(
                f"{url}/v1/chat/completions?wait=0", json=body, headers=headers
            ) as r:
                await r.read()
                if r.status != 202:
                    raise RuntimeError(f"flood request answered {r.status}")

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(sender(http) for _ in range(32)))


async def trickle(url: str, token: str, model: str, n: int, tag: str) -> dict[str, float]:
    """One request a second, each waited for; when each was sent (epoch s), by its text."""
    headers = {"Authorization": f"Bearer {token}"}
    sent: dict[str, float] = {}
    async with aiohttp.ClientSession() as http:
        for i in range(n):
            text = f"{tag}-{i}"
            body = {"model": model, "messages": [{"role": "user", "content": text}]}
            t0 = time.monotonic()
            sent[text] = time.time()
            async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"trickle request answered {r.status}: {await r.text()}")
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
    return sent


def queue_waits(redis: Redis, queue_name: str, since: float) -> list[float]:
    """Ms from enqueued to started of the jobs a queue finished since ``since``."""
    q = Queue(queue_name, connection=redis, serializer=JSONSerializer)
    out = []
    for job_id in FinishedJobRegistry(queue=q).get_job_ids():
        job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
        if job.enqueued_at is None or job.started_at is None:
            continue
        if job.enqueued_at.timestamp() < since:
            continue
        out.append((job.started_at - job.enqueued_at).total_seconds() * 1000)
    return out


def model_starts(stack: Stack) -> dict[str, float]:
    """When the model started each delayed call, by the text it echoed."""
    timeline = httpx.get(f"{stack.faults.base}/timeline").json()
    return {answer.removeprefix("echo: "): start for answer, start, _ in timeline}


def scenario(
    stack: Stack,
    redis: Redis,
    model: str,
    flooder: str | None,
    trickler: str,
    queue_name: str | None,
    tag: str,
    a: argparse.Namespace,
) -> Waits:
    since = time.time()

    async def run() -> dict[str, float]:
        if flooder is None:
            return await trickle(stack.url, trickler, model, a.trickle, tag)
        await flood(stack.url, flooder, model, a.flood)  # A's backlog, then B's trickle
        return await trickle(stack.url, trickler, model, a.trickle, tag)

    sent = asyncio.run(run())
    if flooder is not None:  # wait for A's flood to drain
        wait_for(
            lambda: sum(1 for t in model_starts(stack) if t.startswith("a-")) >= a.flood,
            600,
            "the flood to drain",
        )
    timeline = httpx.get(f"{stack.faults.base}/timeline").json()
    ends = [end for answer, _, end in timeline if answer.startswith("echo: a-") and end >= since]
    httpx.delete(f"{stack.faults.base}/timeline")
    starts = {answer.removeprefix("echo: "): start for answer, start, _ in timeline}
    last_b = max(starts.get(text, 0.0) for text in sent)
    flood_done = sum(
        1 for text, t in starts.items() if text.startswith("a-") and since <= t <= last_b
    )
    waits = queue_waits(redis, queue_name, since) if queue_name else []
    before = [(starts[text] - t) * 1000 for text, t in sent.items() if text in starts]
    return Waits(
        queue=waits,
        before_model=before,
        flood_done=flood_done,
        flood_seconds=max(ends) - since if ends else 0.0,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--flood", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--trickle", type=int, default=15)
    ap.add_argument("--delay", type=float, default=0.1)
    a = ap.parse_args()
    with Stack() as stack:
        backend = stack.faults.endpoint(f"delay/{a.delay:g}")
        tenants = {}
        for name in ("team-a", "team-b"):
            stack.cluster.kubectl("create", "namespace", name)
            labels = [f"{k}={v}" for k, v in LABEL.items()]
            stack.cluster.kubectl("label", "namespace", name, *labels)
            tenants[name] = create_token(stack.cluster.kubeconfig, name, "bench")
        shared = {
            "apiVersion": "llmloom.io/v1alpha1",
            "kind": "ClusterFlavor",
            "metadata": {"name": SHARED},
            "spec": {
                "provider": "openai",
                "model": "echo",
                "endpoint": backend,
                "concurrency": a.concurrency,
                "tenantSelector": {"matchLabels": LABEL},
            },
        }
        stack.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(shared))
        stack.flavor("fifo", backend, concurrency=a.concurrency)
        stack.start_llmloom(queues=[f"{SHARED}@*"])
        redis = Redis.from_url(stack.redis.url)
        b_queue = f"{SHARED}@team-b"

        alone = scenario(stack, redis, SHARED, None, tenants["team-b"], b_queue, "b-alone", a)
        flooded = scenario(
            stack, redis, SHARED, tenants["team-a"], tenants["team-b"], b_queue, "b-flood", a
        )
        # One queue for comparison: both senders in one namespace, on its own Flavor and
        # a worker of its own (the shared model's is idle by now).
        fifo_worker = stack.worker(["fifo"])
        fifo = scenario(stack, redis, "fifo", stack.token, stack.token, None, "b-fifo", a)
        fifo_worker.stop()

    print(
        f"One shared model (fault server, {a.delay * 1000:.0f} ms a call), one worker with "
        f"{a.concurrency} slots; tenant B sends {a.trickle} requests, one a second, each "
        f"waited for, while the backlog of {a.flood} requests tenant A has just sent "
        "drains.\n"
    )
    print(
        "| scenario | B: queue wait p50 | p95 | B: before the model p50 | p95 "
        "| A answered meanwhile | A's flood done in |\n|---|---|---|---|---|---|---|"
    )
    for label, w in (
        ("B alone", alone),
        ("B with A's flood (fair, per-tenant queues)", flooded),
        ("B with A's flood (one queue, first come first served)", fifo),
    ):
        queued = (
            f"{statistics.median(w.queue):.0f} ms | {p(w.queue, 0.95):.0f} ms"
            if w.queue
            else "(one queue with A's) | "
        )
        print(
            f"| {label} | {queued} "
            f"| {statistics.median(w.before_model):.0f} ms | {p(w.before_model, 0.95):.0f} ms "
            f"| {w.flood_done} | {w.flood_seconds:.1f} s |"
        )
    ratio = statistics.median(flooded.queue) / max(statistics.median(alone.queue), 1e-3)
    print(f"\nB's median queue wait with the flood / alone: {ratio:.2f}x (bar: 2x at most)")
    print(f"Run {datetime.now().strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
