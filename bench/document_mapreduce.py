"""How close a mapReduce document job comes to its ideal critical path.

Starts the local control plane, Redis, a model server that answers every call
after a fixed delay (the fault server's /delay endpoint), the operator and one
worker process; serves a generated document of 200,000 tokens over HTTP; then,
for each concurrency, creates one LLMJob (task document, strategy mapReduce,
chunks of 2,000 tokens, the document by URL) on a flavor with that
concurrency and waits until it succeeds.

The ideal is what the calls alone must take: ceil(chunks / concurrency) waves
of map calls, then one call per reduce level, each ``delay`` long. Measured:

- calls: from the first call's start to the last call's end, as the worker saw
  them (what the strategy controls);
- cutting: cutting the document into chunks (tiktoken, in a thread);
- worker: the whole attempt, including fetching and cutting the document;
- end to end: from creating the LLMJob to its Succeeded status (adds the
  operator's admission, the queue and the status writes).

    .venv/bin/python bench/document_mapreduce.py [--tokens 200000] [--delay 0.2] \
        [--concurrency 4,16,32]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from redis import Redis

from devstack.cluster import Cluster
from devstack.faultserver import FaultServer
from devstack.procs import Proc, free_port, wait_for
from devstack.redisserver import RedisServer
from devstack.stack import install_crds
from llmloom import chunking, tokens

NS = "bench"
PY = [sys.executable, "-m", "llmloom.cli"]
JOBS = f"/apis/llmloom.io/v1alpha1/namespaces/{NS}/llmjobs"
# fmt: off
WORDS = [
    "the", "a", "river", "town", "council", "market", "road", "winter", "harvest", "bridge",
    "report", "budget", "people", "north", "old", "new", "long", "quiet", "early", "late",
    "many", "few", "often", "rarely", "built", "opened", "closed", "paid", "asked", "decided",
    "found", "moved", "grew", "fell", "rose", "kept", "and", "but", "because", "while", "when",
    "after", "before", "since", "with", "without", "under", "over", "between", "across",
]
# fmt: on


def generate(target_tokens: int, seed: int = 7) -> str:
    """English-like paragraphs until the text holds ``target_tokens`` (cl100k) tokens."""
    rng = random.Random(seed)
    enc = tokens.encoding_for("gpt-4")
    paragraphs: list[str] = []
    count = 0
    while count < target_tokens:
        sentences = []
        for _ in range(rng.randint(3, 8)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(6, 20))]
            sentences.append(" ".join(words).capitalize() + ".")
        paragraph = " ".join(sentences)
        paragraphs.append(paragraph)
        count += chunking.count(paragraph + "\n\n", enc)
    return "\n\n".join(paragraphs)


def serve(text: str) -> tuple[ThreadingHTTPServer, str]:
    """The document at http://127.0.0.1:PORT/document.txt, from a thread."""
    body = text.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/document.txt"


def flavor(name: str, endpoint: str, concurrency: int) -> dict[str, Any]:
    return {
        "apiVersion": "llmloom.io/v1alpha1",
        "kind": "Flavor",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "provider": "openai",
            "model": "echo",
            "endpoint": endpoint,
            "concurrency": concurrency,
            "timeoutSeconds": 120,
        },
    }


def job(name: str, flavor_name: str, url: str) -> dict[str, Any]:
    return {
        "apiVersion": "llmloom.io/v1alpha1",
        "kind": "LLMJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "flavor": flavor_name,
            "task": "document",
            "document": {"url": url},
            "prompt": "Summarise the text.",
            "strategy": "mapReduce",
            "chunking": {"createNewTurnAfter": 2000},
        },
    }


def run_one(cluster: Cluster, redis: Redis, name: str, flavor_name: str, url: str) -> Any:
    """Create the job, wait for Succeeded; its stored response and the end-to-end time."""
    started = time.monotonic()
    created = cluster.http.post(JOBS, json=job(name, flavor_name, url))
    created.raise_for_status()

    def finished() -> dict[str, Any] | None:
        status: dict[str, Any] = cluster.http.get(f"{JOBS}/{name}").json().get("status", {})
        if status.get("state") == "Failed":
            raise SystemExit(f"{name} failed: {status.get('message')}")
        return status if status.get("state") == "Succeeded" else None

    status = wait_for(finished, 600, f"{name} to succeed", interval=0.02)
    elapsed = time.monotonic() - started
    raw = redis.get(status["result"]["key"])
    assert isinstance(raw, bytes)
    return json.loads(raw)["response"], elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument("--delay", type=float, default=0.2)
    ap.add_argument("--concurrency", default="4,16,32")
    a = ap.parse_args()
    levels = [int(c) for c in a.concurrency.split(",")]
    text = generate(a.tokens)
    doc_server, url = serve(text)
    work = Path(tempfile.mkdtemp(prefix="llmloom-bench-"))
    cluster = Cluster(gpu_nodes=0, cpu_nodes=1)
    redis_server = RedisServer(work / "redis")
    faults = FaultServer(work)
    procs: list[Proc] = []
    rows = []
    try:
        install_crds(cluster)
        cluster.kubectl("create", "namespace", NS)
        names = [f"paced-c{c}" for c in levels]
        endpoint = faults.endpoint(f"delay/{a.delay}")
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input="\n---\n".join(
                yaml.safe_dump(flavor(n, endpoint, c)) for n, c in zip(names, levels, strict=True)
            ),
        )
        env = {
            **cluster.env(),
            "LLMLOOM_REDIS_URL": redis_server.url,
            "LLMLOOM_KUBECONFIG": str(cluster.kubeconfig),
            "LLMLOOM_LOG_LEVEL": "WARNING",
            "LLMLOOM_METRICS_PORT": "0",
        }
        procs.append(Proc("operator", [*PY, "operator"], work, env))
        queues = [arg for n in names for arg in ("--queue", f"{NS}/{n}")]
        procs.append(Proc("worker", [*PY, "worker", *queues], work, env))
        redis = Redis.from_url(redis_server.url)
        run_one(cluster, redis, "warm-up", names[-1], url)  # connections, tokenizer, caches
        for n, c in zip(names, levels, strict=True):
            response, e2e = run_one(cluster, redis, f"doc-{n}", n, url)
            about = response["llmloom"]
            chunks, reduce_levels = about["chunks"], about.get("reduceLevels", 0)
            ideal = (math.ceil(chunks / c) + reduce_levels) * a.delay
            calls = about["timings"]["callsMs"] / 1000
            worker = about["timings"]["totalMs"] / 1000
            cut = about["timings"]["chunkMs"] / 1000
            rows.append((chunks, c, about["calls"], reduce_levels, ideal, calls, cut, worker, e2e))
    finally:
        for p in procs:
            p.stop()
        faults.stop()
        redis_server.stop()
        cluster.stop()
        doc_server.shutdown()
    doc_tokens = chunking.count(text, tokens.encoding_for("gpt-4"))
    print(
        f"document {doc_tokens} tokens ({len(text.encode()) / 1e6:.1f} MB, by URL), chunks of "
        f"2000 tokens, provider delay {a.delay * 1000:.0f} ms per call, one worker process\n"
    )
    print(
        "| chunks | concurrency | calls | reduce levels | ideal | calls took | ratio "
        "| cutting | worker total | ratio | end to end | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for chunks, c, n, lv, ideal, calls, cut, worker, e2e in rows:
        print(
            f"| {chunks} | {c} | {n} | {lv} | {ideal:.2f} s | {calls:.2f} s | "
            f"{calls / ideal:.2f}x | {cut:.2f} s | {worker:.2f} s | {worker / ideal:.2f}x | "
            f"{e2e:.2f} s | {e2e / ideal:.2f}x |"
        )


if __name__ == "__main__":
    main()
