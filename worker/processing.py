"""Runs one job version end to end: read, call the provider, store, report.

The LLMJob resource is the source of truth and the queue entry only a
reference, so every step starts from the object as the API server has it: a
deleted, recreated or edited job is recognised and left alone. Status is
written read-modify-write with the resourceVersion as a precondition, so the
operator's conditions are never lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from redis.asyncio import Redis

from llmloom import conditions, results, secrets, tokens
from llmloom.kube import FLAVORS, LLMJOBS, Kube, KubeError, Obj
from llmloom.queues import JobRef
from llmloom.resources import Flavor, LLMJob, Usage
from llmloom.settings import WorkerSettings
from llmloom.worker.providers import CHAT, ProviderError

log = logging.getLogger(__name__)


@dataclass
class Deps:
    """What processing needs from its process: clients and settings."""

    settings: WorkerSettings
    kube: Kube
    redis: Redis
    http: httpx.AsyncClient


class JobFailed(Exception):
    """The job cannot succeed; the reason goes into its Failed condition."""

    def __init__(self, reason: str, message: str, status_code: int = 502) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason, self.message, self.status_code = reason, message, status_code


async def update_status(
    deps: Deps, ref: JobRef, mutate: Callable[[dict[str, Any]], None]
) -> Obj | None:
    """Write the status of exactly this job version (None: it is gone or was edited)."""
    return await deps.kube.update_status(
        LLMJOBS, ref.namespace, ref.name, mutate, uid=ref.uid, generation=ref.generation
    )


def mark_running(ref: JobRef) -> Callable[[dict[str, Any]], None]:
    def apply(status: dict[str, Any]) -> None:
        status["state"] = conditions.job_state(status.get("conditions", []), running=True)
        status.setdefault("startTime", conditions.now())
        status["attempts"] = int(status.get("attempts") or 0) + 1
        status["message"] = "running"

    return apply


def mark_finished(
    ref: JobRef, outcome: results.Outcome, nbytes: int, usage: Usage | None, flavor: str
) -> Callable[[dict[str, Any]], None]:
    def apply(status: dict[str, Any]) -> None:
        conds = status.get("conditions", [])
        gen = ref.generation
        if outcome.ok:
            conds = conditions.set_condition(
                conds, conditions.SUCCEEDED, "True", "Completed", "result stored", gen
            )
            conds = [c for c in conds if c["type"] != conditions.FAILED]
            status["message"] = "completed"
        else:
            assert outcome.error is not None
            err = outcome.error
            conds = conditions.set_condition(
                conds, conditions.FAILED, "True", err.reason, err.message, gen
            )
            conds = conditions.set_condition(
                conds, conditions.SUCCEEDED, "False", err.reason, err.message, gen
            )
            status["message"] = err.message[:1024]
        status["conditions"] = conds
        status["state"] = conditions.job_state(conds)
        status["observedGeneration"] = gen
        status["completionTime"] = conditions.now()
        status["flavorUsed"] = flavor
        status["result"] = {
            "version": gen,
            "key": results.result_key(ref.uid, gen),
            "bytes": nbytes,
        }
        if usage is not None:
            status["usage"] = usage.wire()

    return apply


def usage_of(response: dict[str, Any], job: LLMJob, flavor: Flavor) -> Usage:
    """Token usage: the provider's own counts, else counted with the flavor's tokenizer."""
    reported = response.get("usage") or {}
    if reported.get("prompt_tokens") is not None:
        prompt = int(reported["prompt_tokens"])
        completion = int(reported.get("completion_tokens") or 0)
    else:
        enc = tokens.encoding_for(flavor.spec.model)
        prompt = tokens.count_chat_tokens((m.content for m in job.spec.messages or []), enc)
        text = "".join(str(c.get("message", {}).get("content") or "") for c in response["choices"])
        completion = len(enc.encode(text, disallowed_special=()))
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


async def _run(deps: Deps, job: LLMJob) -> tuple[results.Outcome, Usage | None]:
    ns = job.metadata.namespace
    try:
        flavor = Flavor.model_validate(await deps.kube.get(FLAVORS, ns, job.spec.flavor))
    except KubeError as exc:
        if exc.code == 404:
            raise JobFailed(
                "FlavorNotFound",
                f"Flavor {job.spec.flavor!r} does not exist in namespace {ns!r}",
                404,
            ) from exc
        raise
    try:
        api_key = await secrets.api_key(deps.kube, flavor)
    except secrets.SecretMissing as exc:
        raise JobFailed("SecretMissing", str(exc), 503) from exc
    endpoint = deps.settings.endpoint or flavor.spec.endpoint
    if endpoint is None:
        raise JobFailed(
            "NoEndpoint",
            f"Flavor {flavor.metadata.name!r} is served by its own pods; "
            "only the workers in those pods run its jobs",
            503,
        )
    try:
        response = await CHAT[flavor.spec.provider](
            deps.http, endpoint, flavor.spec, api_key, job.spec.messages or [], job.spec.parameters
        )
    except ProviderError as exc:
        code = 400 if exc.reason == "ContextLengthExceeded" else 502
        raise JobFailed(exc.reason, exc.message, code) from exc
    if response.get("model") in (None, "", "-"):  # llama.cpp leaves it blank
        response["model"] = flavor.spec.model
    return results.Outcome(ok=True, response=response), usage_of(response, job, flavor)


async def process(deps: Deps, ref: JobRef) -> str:
    """Run one job version. Returns a word for RQ's result: what happened."""
    try:
        job = LLMJob.model_validate(await deps.kube.get(LLMJOBS, ref.namespace, ref.name))
    except KubeError as exc:
        if exc.code == 404:
            return "deleted"
        raise
    if job.metadata.uid != ref.uid or job.metadata.generation != ref.generation:
        return "superseded"
    if conditions.finished([c.wire() for c in job.status.conditions], ref.generation):
        return "already-finished"
    if await update_status(deps, ref, mark_running(ref)) is None:
        return "superseded"

    usage: Usage | None = None
    try:
        outcome, usage = await _run(deps, job)
    except JobFailed as exc:
        outcome = results.Outcome(
            ok=False,
            error=results.ErrorInfo(
                reason=exc.reason, message=exc.message, status_code=exc.status_code
            ),
        )
    stored, nbytes = await results.store(
        deps.redis, ref.uid, ref.generation, outcome, deps.settings.result_ttl_seconds
    )
    await update_status(deps, ref, mark_finished(ref, stored, nbytes, usage, job.spec.flavor))
    state = "succeeded" if stored.ok else "failed"
    log.info("job %s/%s generation %d %s", ref.namespace, ref.name, ref.generation, state)
    return state
