"""What a chat request costs through LLMLoom, beside LiteLLM's proxy and direct calls.

One run, one machine, one backend (the fault server answering after 50 ms),
one load generator (wrk, keep-alive connections). Each target gets 1, 16 and
64 concurrent clients:

- direct: wrk to the backend;
- LiteLLM: its proxy (2 workers, master key, no database), bench-only, installed
  by ``bench/peers.sh`` outside the repository;
- LLMLoom: the API, one worker process and the operator as separate processes
  over a real control plane and Redis; every request is an LLMJob.

It prints requests/s, p50/p99 latency, CPU per request of all the target's
processes with the backend (for LLMLoom: API, worker, operator, Redis, etcd,
kube-apiserver, controller-manager, scheduler, kwok), the API server's requests
per chat request by verb and resource (its own ``apiserver_request_total``,
less what the control plane does when idle), and the LLMJobs left in etcd
after the run and once their TTL passed.

    bench/peers.sh   # once: wrk and LiteLLM's proxy
    .venv/bin/python bench/request_cost.py [--seconds 10] [--delay 0.05] [--ttl 20]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from harness import NS, RequestKey, Stack
from peers import LiteLLMProxy, WrkResult, cpu_seconds, wrk

LEVELS = (1, 16, 64)


@dataclass(frozen=True)
class Row:
    target: str
    clients: int
    result: WrkResult
    cpu_ms: float
    """CPU per request, all the target's processes and the backend."""


def per_request(delta: Counter[RequestKey], n: int) -> dict[RequestKey, float]:
    return {k: v / n for k, v in delta.items() if n and v / n >= 0.005}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0, help="each wrk run")
    ap.add_argument("--delay", type=float, default=0.05, help="the backend's answer time")
    ap.add_argument("--ttl", type=int, default=20, help="LLMLOOM_REQUEST_JOB_TTL_SECONDS")
    a = ap.parse_args()
    rows: list[Row] = []
    breakdown: dict[str, float] = {}
    calls: dict[int, dict[RequestKey, float]] = {}
    jobs_after: dict[int, int] = {}
    with Stack(ttl=a.ttl, env={"LLMLOOM_JOB_RESYNC_SECONDS": "2"}) as stack:
        backend = stack.faults.endpoint(f"delay/{a.delay:g}")
        stack.flavor("paced", backend, concurrency=64)
        stack.start_llmloom(queues=["paced"])
        chat = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}

        def run(
            target: str,
            url: str,
            model: str,
            headers: dict[str, str],
            pids: Callable[[], list[int]],
        ) -> list[tuple[int, WrkResult, float]]:
            body = {"model": model, **chat}
            wrk(url, body, headers, connections=8, seconds=2)  # warm connections and caches
            out = []
            for clients in LEVELS:
                before = cpu_seconds(pids())
                r = wrk(url, body, headers, connections=clients, seconds=a.seconds)
                cpu = cpu_seconds(pids()) - before
                rows.append(Row(target, clients, r, 1000 * cpu / max(1, r.requests)))
                out.append((clients, r, cpu))
            return out

        run("direct", f"{backend}/chat/completions", "echo", {}, stack.backend_pids)
        with LiteLLMProxy(backend, model="echo", workdir=stack.work / "litellm") as proxy:
            proxy.warm()
            run(
                "LiteLLM 1.108 (2 workers)",
                f"{proxy.url}/chat/completions",
                "echo",
                proxy.headers,
                lambda: proxy.pids() + stack.backend_pids(),
            )

        # What the control plane asks of the API server, and its CPU, with no load: to
        # subtract.
        idle0, cpu_idle0, t0 = stack.api_requests(), sum(stack.cpu().values()), time.monotonic()
        time.sleep(a.seconds)
        idle = stack.api_requests() - idle0
        idle_seconds = time.monotonic() - t0
        idle_rate = {k: v / idle_seconds for k, v in idle.items()}
        idle_cpu = (sum(stack.cpu().values()) - cpu_idle0) / idle_seconds

        body = {"model": "paced", **chat}
        url = f"{stack.url}/v1/chat/completions"
        wrk(url, body, stack.headers, connections=8, seconds=2)
        for clients in LEVELS:
            cpu0, req0 = stack.cpu(), stack.api_requests()
            backend0 = cpu_seconds(stack.backend_pids())
            r = wrk(url, body, stack.headers, connections=clients, seconds=a.seconds)
            cpu1, req1 = stack.cpu(), stack.api_requests()
            backend1 = cpu_seconds(stack.backend_pids())
            used = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
            n = max(1, r.requests)
            total = sum(used.values()) + backend1 - backend0
            rows.append(Row("LLMLoom", clients, r, 1000 * total / n))
            delta = req1 - req0
            for k, rate in idle_rate.items():
                delta[k] -= round(rate * r.seconds)
            calls[clients] = per_request(+delta, n)
            if clients == 16:
                breakdown = {k: 1000 * v / n for k, v in used.items()}
                breakdown["backend"] = 1000 * (backend1 - backend0) / n
            jobs_after[clients] = stack.count("llmjobs")
        # The deletes after the TTL: their requests and CPU (less the idle's), per request.
        sent = sum(row.result.requests for row in rows if row.target == "LLMLoom")
        req0, cpu_start, t0 = stack.api_requests(), sum(stack.cpu().values()), time.monotonic()
        time.sleep(a.ttl + 10)
        later = stack.api_requests() - req0
        waited = time.monotonic() - t0
        for k, rate in idle_rate.items():
            later[k] -= round(rate * waited)
        deletes = per_request(+later, sent)
        spent = sum(stack.cpu().values()) - cpu_start - idle_cpu * waited
        delete_cpu_ms = 1000 * spent / sent
        jobs_later = stack.count("llmjobs")

    direct_p50 = {row.clients: row.result.p50_ms for row in rows if row.target == "direct"}
    print(
        f"backend answers after {a.delay * 1000:.0f} ms; wrk {a.seconds:g} s per row; "
        f"LLMLoom: 1 API process, 1 worker (64 slots), the operator, one LLMJob per request\n"
    )
    print(
        "| target | clients | req/s | p50 | p99 | added p50 | CPU per request | non-2xx | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        r = row.result
        added = r.p50_ms - direct_p50[row.clients]
        print(
            f"| {row.target} | {row.clients} | {r.rps:.1f} | {r.p50_ms:.0f} ms | "
            f"{r.p99_ms:.0f} ms | {added:+.0f} ms | {row.cpu_ms:.1f} ms | {r.non_2xx} | "
            f"{r.socket_errors} |"
        )
    print("\nLLMLoom's CPU per request at 16 clients, by process:\n")
    print("| process | CPU per request |\n|---|---|")
    for name, ms in sorted(breakdown.items(), key=lambda kv: -kv[1]):
        if ms >= 0.05:
            print(f"| {name} | {ms:.2f} ms |")
    print("\nAPI-server requests per chat request (less the idle control plane's):\n")
    keys = sorted({k for c in calls.values() for k in c})
    print("| verb | resource | code | group | " + " | ".join(f"{c} clients" for c in LEVELS) + " |")
    print("|---|---|---|---|" + "---|" * len(LEVELS))
    for k in keys:
        cells = " | ".join(f"{calls[c].get(k, 0.0):.2f}" for c in LEVELS)
        print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3] or 'core'} | {cells} |")
    totals = " | ".join(f"**{sum(calls[c].values()):.2f}**" for c in LEVELS)
    print(f"| **all, while answering** | | | | {totals} |")
    for k, v in sorted(deletes.items()):
        print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3] or 'core'} | later, after the TTL: {v:.2f} |")
    print(
        f"\nAfter the TTL, deleting the jobs cost {delete_cpu_ms:.1f} ms of CPU per request "
        "(all processes, less the idle control plane's): add it to the CPU column for the "
        "whole cost of a request."
    )
    print(
        f"\nLLMJobs in namespace {NS}: "
        + ", ".join(f"{jobs_after[c]} after the {c}-client run" for c in LEVELS)
        + f"; {jobs_later} once the TTL ({a.ttl} s) passed."
    )


if __name__ == "__main__":
    main()
