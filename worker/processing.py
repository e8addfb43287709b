"""Runs one job version end to end: read, call the provider, store, report.

The LLMJob resource is the source of truth and the queue entry only a
reference, so every step starts from the object as the API server has it: a
deleted, recreated or edited job is recognised and left alone. Status is
written read-modify-write with the resourceVersion as a precondition, so the
operator's conditions are never lost.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from redis.asyncio import Redis

from llmloom import conditions, results, tokens
from llmloom.kube import FLAVORS, LLMJOBS, SECRETS, Kube, KubeError, Obj
from llmloom.queues import JobRef
from llmloom.resources import Flavor, LLMJob, Usage
from llmloom.settings import WorkerSettings
from llmloom.worker.providers import ProviderError, openai_chat

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
    kube: Kube, ref: JobRef, mutate: Callable[[dict[str, Any]], None], attempts: int = 8
) -> Obj | None:
    """Apply ``mutate`` to the job's status, retrying on conflicts.

    Returns:
        The updated object, or None when the job is gone or now holds another spec version.
    """
    for _ in range(attempts):
        try:
            obj = await kube.get(LLMJOBS, ref.namespace, ref.name)
        except KubeError as exc:
            if exc.code == 404:
                return None
            raise
        meta = obj["metadata"]
        if meta["uid"] != ref.uid or meta.get("generation") != ref.generation:
            return None
        mutate(obj.setdefault("status", {}))
        try:
            return await kube.replace_status(LLMJOBS, obj)
        except KubeError as exc:
            if exc.code != 409:
                raise
    raise RuntimeError(f"status of {ref.namespace}/{ref.name} kept changing under the worker")


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


async def _api_key(kube: Kube, flavor: Flavor) -> str | None:
    ref = flavor.spec.api_key_secret_ref
    if ref is None:
        return None
    try:
        secret = await kube.get(SECRETS, flavor.metadata.namespace, ref.name)
    except KubeError as exc:
        if exc.code == 404:
            raise JobFailed(
                "SecretMissing",
                f"Secret {ref.name!r} of Flavor {flavor.metadata.name!r} does not exist",
                503,
            ) from exc
        raise
    value = secret.get("data", {}).get(ref.key)
    if value is None:
        raise JobFailed("SecretMissing", f"Secret {ref.name!r} has no key {ref.key!r}", 503)
    return base64.b64decode(value).decode().strip()


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
    api_key = await _api_key(deps.kube, flavor)
    try:
        response = await openai_chat(
            deps.http, flavor.spec, api_key, job.spec.messages or [], job.spec.parameters
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
    if await update_status(deps.kube, ref, mark_running(ref)) is None:
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
    await update_status(deps.kube, ref, mark_finished(ref, stored, nbytes, usage, job.spec.flavor))
    state = "succeeded" if stored.ok else "failed"
    log.info("job %s/%s generation %d %s", ref.namespace, ref.name, ref.generation, state)
    return state
