"""What faults cost: jobs lost, answered twice, or failed, per fault.

One stack (harness.Stack: the control plane, Redis with its append-only
file, the operator, the API and a worker process, each as its own process),
a flavor on the fault server answering after 500 ms, 16 slots. For each fault,
a fresh round of mixed work (``--api`` chat requests through the API answered
202 and polled, ``--kubectl`` document jobs applied with kubectl, and a batch
of ``--lines`` lines), then the fault, at once, while that work is queued or
in flight:

- a worker killed (SIGKILL), started again a second later (as its Deployment
  would);
- the operator killed (SIGKILL), started again two seconds later;
- the API stopped (SIGTERM) and started again;
- Redis stopped and started again on its append-only file;
- Redis emptied (FLUSHALL): what it held is gone;
- kube-apiserver stopped and started again (etcd keeps its data).

Then it waits for every item to end (``--deadline`` seconds at most) and
counts, per fault: succeeded; failed, with the reasons; lost (never ended);
answered twice (a batch line with two outputs; a job whose result version
grew); and run twice at the model (at-least-once delivery shows there, not to
clients). Items that failed because Redis lost their stored input are
counted apart.

    .venv/bin/python bench/faults.py [--api 400] [--kubectl 300] [--lines 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import httpx
import openai
import yaml
from harness import NS, Stack, chat_batch
from redis import Redis

from devstack.procs import wait_for

INPUT_LOST = {"RequestLost", "input_lost"}
"""Failure reasons that say Redis lost an item's stored input (counted apart)."""


@dataclass
class Tally:
    """The outcomes of one round."""

    succeeded: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    twice: int = 0
    rerun: int = 0
    """Items the model was called for more than once."""

    @property
    def input_lost(self) -> int:
        return sum(n for reason, n in self.failed.items() if reason in INPUT_LOST)


def document_job(name: str, text: str) -> dict[str, Any]:
    return {
        "apiVersion": "llmloom.io/v1alpha1",
        "kind": "LLMJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "flavor": "paced",
            "task": "document",
            "prompt": "Summarise.",
            "document": {"text": text},
        },
    }


async def submit_api(stack: Stack, tag: str, n: int, refused: Counter[str]) -> list[str]:
    """``n`` chat requests answered 202; their task ids (a refusal is counted by code)."""
    ids: list[str] = []
    todo = iter(range(n))

    async def sender(http: aiohttp.ClientSession) -> None:
        for i in todo:
            body = {"model": "paced", "messages": [{"role": "user", "content": f"{tag}-api-{i}"}]}
            try:
                async with http.post(
                    f"{stack.url}/v1/chat/completions?wait=0", json=body, headers=stack.headers
                ) as r:
                    answer = await r.json()
                    if r.status == 202:
                        ids.append(answer["id"])
                    else:
                        code = (answer.get("error") or {}).get("code") or r.status
                        refused[f"refused {code}"] += 1
            except aiohttp.ClientError as exc:
                refused[f"refused {type(exc).__name__}"] += 1

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(sender(http) for _ in range(16)))
    return ids


def submit(
    stack: Stack, tag: str, a: argparse.Namespace, refused: Counter[str]
) -> tuple[list[str], list[str], str]:
    """A round's work: API task ids, kubectl job names, the batch id."""
    tasks = asyncio.run(submit_api(stack, tag, a.api, refused))
    jobs = [f"{tag}-doc-{i}" for i in range(a.kubectl)]
    docs = [document_job(name, f"{name} text.") for name in jobs]
    stack.cluster.kubectl("apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in docs))
    sdk = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.token, max_retries=5)
    data = chat_batch("paced", [f"{tag}-line-{i}" for i in range(a.lines)])
    upload = sdk.files.create(file=("in.jsonl", data), purpose="batch")
    batch = sdk.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return tasks, jobs, batch.id


def restart(stack: Stack, name: str, kill: bool, pause: float) -> Callable[[], None]:
    def fault() -> None:
        proc = stack.proc(name)
        if kill:
            proc.kill()
        else:
            proc.stop()
        time.sleep(pause)
        proc.restart()

    return fault


def emptied(stack: Stack) -> Callable[[], None]:
    def fault() -> None:
        Redis.from_url(stack.redis.url).flushall()

    return fault


def ended_task(stack: Stack, task: str) -> str | None:
    """A task's end: "succeeded", "failed:<reason>", or None while it runs (or the API is
    away)."""
    try:
        r = httpx.get(f"{stack.url}/v1/tasks/{task}", headers=stack.headers, timeout=10)
    except httpx.HTTPError:
        return None
    if r.status_code == 404:
        return "failed:TaskNotFound"
    if r.status_code != 200:
        return None
    body = r.json()
    if body["status"] == "succeeded":
        return "succeeded"
    if body["status"] in ("failed", "cancelled"):
        return f"failed:{(body.get('error') or {}).get('code') or body['status']}"
    return None


def ended_jobs(stack: Stack, names: set[str]) -> dict[str, tuple[str, int]]:
    """The kubectl jobs that ended: name -> (end, result version)."""
    try:
        items = stack.cluster.http.get(f"/apis/llmloom.io/v1alpha1/namespaces/{NS}/llmjobs")
        listed = items.json()["items"]
    except (httpx.HTTPError, KeyError, ValueError):
        return {}
    out = {}
    for obj in listed:
        name = obj["metadata"]["name"]
        if name not in names:
            continue
        status = obj.get("status") or {}
        conds = {c["type"]: c for c in status.get("conditions", [])}
        version = int((status.get("result") or {}).get("version") or 0)
        if conds.get("Succeeded", {}).get("status") == "True":
            out[name] = ("succeeded", version)
        elif conds.get("Failed", {}).get("status") == "True":
            out[name] = (f"failed:{conds['Failed'].get('reason')}", version)
    return out


def run_round(stack: Stack, tag: str, fault: Callable[[], None], a: argparse.Namespace) -> Tally:
    httpx.delete(f"{stack.faults.base}/timeline")
    tally = Tally()
    tasks, jobs, batch_id = submit(stack, tag, a, tally.failed)
    fault()
    pending_tasks, pending_jobs = set(tasks), set(jobs)
    sdk = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.token, max_retries=5)
    batch: Any = None
    deadline = time.monotonic() + a.deadline
    while time.monotonic() < deadline:
        for task in list(pending_tasks):
            end = ended_task(stack, task)
            if end is not None:
                pending_tasks.discard(task)
                if end == "succeeded":
                    tally.succeeded += 1
                else:
                    tally.failed[end.split(":", 1)[1]] += 1
        for name, (end, version) in ended_jobs(stack, pending_jobs).items():
            pending_jobs.discard(name)
            tally.twice += version > 1
            if end == "succeeded":
                tally.succeeded += 1
            else:
                tally.failed[end.split(":", 1)[1]] += 1
        if batch is None or batch.status not in ("completed", "failed", "expired", "cancelled"):
            with contextlib.suppress(openai.OpenAIError):  # the API is away: later
                batch = sdk.batches.retrieve(batch_id)
        batch_done = batch is not None and batch.status in (
            "completed",
            "failed",
            "expired",
            "cancelled",
        )
        if not pending_tasks and not pending_jobs and batch_done:
            break
        time.sleep(2)
    tally.lost += len(pending_tasks) + len(pending_jobs)
    # The batch: one output or error line per input line, never two.
    seen: Counter[str] = Counter()
    if batch is not None:
        for file_id, ok in ((batch.output_file_id, True), (batch.error_file_id, False)):
            if not file_id:
                continue
            for line in sdk.files.content(file_id).text.splitlines():
                out = json.loads(line)
                seen[out["custom_id"]] += 1
                error = out.get("error") or (out.get("response") or {}).get("body", {}).get("error")
                if ok and not error:
                    tally.succeeded += 1
                else:
                    code = (error or {}).get("code") or "BatchLineFailed"
                    tally.failed[str(code)] += 1
    tally.twice += sum(1 for n in seen.values() if n > 1)
    if batch is None or batch.status in ("validating", "in_progress", "finalizing"):
        tally.lost += a.lines - len(seen)  # never ended
    elif len(seen) < a.lines:  # ended without a line for some: say how
        failed = batch.errors.data[0].code if batch.errors and batch.errors.data else None
        tally.failed[failed or f"batch {batch.status}"] += a.lines - len(seen)
    timeline = httpx.get(f"{stack.faults.base}/timeline").json()
    calls = Counter(answer for answer, _, _ in timeline if "-api-" in answer or "-line-" in answer)
    tally.rerun = sum(1 for n in calls.values() if n > 1)
    return tally


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--api", type=int, default=400)
    ap.add_argument("--kubectl", type=int, default=300)
    ap.add_argument("--lines", type=int, default=300)
    ap.add_argument("--deadline", type=float, default=240.0)
    ap.add_argument("--delay", type=float, default=0.5)
    a = ap.parse_args()
    rows: list[tuple[str, Tally]] = []
    with Stack(ttl=600, persist_redis=True, env={"LLMLOOM_LEASE_SECONDS": "5"}) as stack:
        stack.flavor("paced", stack.faults.endpoint(f"delay/{a.delay:g}"), concurrency=16)
        stack.start_llmloom(queues=["paced"])
        print(f"logs in {stack.work}", flush=True)
        faults: list[tuple[str, Callable[[], None]]] = [
            ("none (baseline)", lambda: None),
            ("worker killed (SIGKILL), back after 1 s", restart(stack, "worker-2", True, 1)),
            ("operator killed (SIGKILL), back after 2 s", restart(stack, "operator", True, 2)),
            ("API stopped (SIGTERM) and started", restart(stack, "api", False, 1)),
            ("Redis stopped and started (append-only file)", restart(stack, "redis", False, 1)),
            ("Redis emptied (FLUSHALL)", emptied(stack)),
            ("kube-apiserver stopped and started", restart(stack, "kube-apiserver", False, 2)),
        ]
        for i, (label, fault) in enumerate(faults):
            tally = run_round(stack, f"r{i}", fault, a)
            rows.append((label, tally))
            print(f"{label}: {tally}", flush=True)
            wait_for(lambda: httpx.get(f"{stack.url}/readyz").is_success, 120, "the API")

    total = a.api + a.kubectl + a.lines
    print(
        f"\n{total} items per fault ({a.api} API chat requests answered 202 and polled, "
        f"{a.kubectl} kubectl document jobs, a batch of {a.lines} lines); model answering "
        f"after {a.delay * 1000:.0f} ms, one worker with 16 slots, leases of 5 s.\n"
    )
    print(
        "| fault | succeeded | failed (reasons) | of which input lost with Redis | lost "
        "| answered twice | run twice at the model |\n|---|---|---|---|---|---|---|"
    )
    for label, t in rows:
        reasons = ", ".join(f"{r} {n}" for r, n in t.failed.most_common()) or "—"
        print(
            f"| {label} | {t.succeeded} | {sum(t.failed.values())} ({reasons}) "
            f"| {t.input_lost} | {t.lost} | {t.twice} | {t.rerun} |"
        )
    print(f"\nRun {datetime.now().strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
