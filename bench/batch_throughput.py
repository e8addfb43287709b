"""How fast a chat batch runs through LLMLoom's Batch API, beside direct calls.

The same backend (the fault server answering after 50 ms) takes N chat
requests two ways at the same concurrency:

- direct: an asyncio client (aiohttp) with C requests in flight at a time;
- LLMLoom: a JSONL file of N lines uploaded with the official SDK, an LLMBatch
  created from it, polled until completed; one worker process with C slots.
  Lines travel as work items on the flavor's queue (no LLMJob each).

It prints lines/s for both, the batch's time from create to completed, the
API-server requests the batch made (its own ``apiserver_request_total``, less
the idle control plane's) and the LLMJobs it left.

    .venv/bin/python bench/batch_throughput.py [--lines 2000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp
import openai
from harness import NS, Stack, chat_batch


async def direct(url: str, lines: int, concurrency: int) -> tuple[float, int]:
    """Seconds to send ``lines`` chat requests ``concurrency`` at a time, and the failures
    (aiohttp, the worker's own client, so the client is not what is measured)."""
    todo = iter(range(lines))
    failed = 0

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal failed
        for i in todo:
            body = {"model": "echo", "messages": [{"role": "user", "content": f"line {i}"}]}
            async with http.post(f"{url}/chat/completions", json=body) as r:
                await r.read()
                failed += r.status >= 300

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        t0 = time.monotonic()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        return time.monotonic() - t0, failed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--delay", type=float, default=0.05)
    a = ap.parse_args()
    with Stack() as stack:
        backend = stack.faults.endpoint(f"delay/{a.delay:g}")
        stack.flavor("paced", backend, concurrency=a.concurrency)
        stack.start_llmloom(queues=["paced"])
        direct_s, direct_failed = asyncio.run(direct(backend, a.lines, a.concurrency))

        sdk = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.token, max_retries=0)
        data = chat_batch("paced", [f"line-{i}" for i in range(a.lines)])
        upload = sdk.files.create(file=("requests.jsonl", data), purpose="batch")
        idle0, t_idle = stack.api_requests(), time.monotonic()
        time.sleep(5)
        idle = stack.api_requests() - idle0
        idle_rate = {k: v / (time.monotonic() - t_idle) for k, v in idle.items()}

        req0, t0 = stack.api_requests(), time.monotonic()
        batch = sdk.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        while batch.status not in ("completed", "failed", "cancelled", "expired"):
            time.sleep(0.2)
            batch = sdk.batches.retrieve(batch.id)
        batch_s = time.monotonic() - t0
        delta = stack.api_requests() - req0
        for k, rate in idle_rate.items():
            delta[k] -= round(rate * batch_s)
        calls = +delta
        jobs = stack.count("llmjobs")
        counts = batch.request_counts

    print(
        f"{a.lines} chat lines, backend answers after {a.delay * 1000:.0f} ms, "
        f"{a.concurrency} in flight (LLMLoom: one worker process with {a.concurrency} slots)\n"
    )
    print("| path | time | lines/s | failed |\n|---|---|---|---|")
    print(f"| direct calls | {direct_s:.1f} s | {a.lines / direct_s:.0f} | {direct_failed} |")
    failed = counts.failed if counts else "?"
    print(
        f"| LLMLoom batch ({batch.status}) | {batch_s:.1f} s | {a.lines / batch_s:.0f} | {failed} |"
    )
    print(f"\nAPI-server requests of the batch in {NS} (less the idle control plane's):")
    print("\n| verb | resource | code | count |\n|---|---|---|---|")
    for (verb, resource, code, _), n in sorted(calls.items()):
        print(f"| {verb} | {resource} | {code} | {n} |")
    print(f"| **all** | | | **{sum(calls.values())}** |")
    print("\n(GET llmbatches: the bench polling the batch through the API, every 0.2 s.)")
    print(f"\nLLMJobs left in the namespace: {jobs}")


if __name__ == "__main__":
    main()
