"""Getting an answer for a job despite faults: retries, fallback, failover.

A call that fails for a reason that may pass (429, 5xx, timeouts, a dropped
connection, a garbled body) is retried with exponential backoff and jitter,
within the flavor's ``retry`` and never sooner than a Retry-After asks. A
prompt that overflows the model's context goes to the flavor's
``fallbackFlavor``. When a flavor keeps failing, its ``failoverFlavors`` are
tried in order. Errors that retrying cannot fix (400, 401, 404) end the job
at once with the provider's message.

``complete`` is that machinery for one answer; document jobs
(``llmloom.worker.documents``) make many such calls for one job.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from llmloom import secrets, streams, tokens
from llmloom.kube import FLAVORS
from llmloom.resources import Flavor, LLMJob, Message, Retry, Usage
from llmloom.worker.deps import Deps, JobFailed
from llmloom.worker.providers import ProviderError, Target, wire

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """The provider's response, what it cost, and which flavor gave it."""

    response: dict[str, Any]
    usage: Usage
    flavor: str
    provider_ms: float
    """How long the call that answered took."""


def backoff(retry: Retry, attempt: int, retry_after: float | None) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): exponential with
    jitter, capped, and never less than the provider's Retry-After."""
    ceiling = min(retry.max_delay_seconds, retry.min_delay_seconds * 2**attempt)
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after) if retry_after is not None else delay


def usage_of(
    response: dict[str, Any], job: LLMJob, flavor: Flavor, messages: list[Message] | None = None
) -> Usage:
    """Token usage: the provider's own counts, else counted with the flavor's tokenizer;
    the cost from the flavor's pricing. ``messages``: what was sent, when not the job's
    own messages."""
    reported = response.get("usage") or {}
    if reported.get("prompt_tokens") is not None:
        prompt = int(reported["prompt_tokens"])
        completion = int(reported.get("completion_tokens") or 0)
    elif job.spec.task == "embeddings" and messages is None:
        enc = tokens.encoding_for(flavor.spec.model, flavor.spec.tokenizer)
        prompt = sum(len(enc.encode(t, disallowed_special=())) for t in job.spec.texts or [])
        completion = 0
    else:
        enc = tokens.encoding_for(flavor.spec.model, flavor.spec.tokenizer)
        sent = job.spec.messages if messages is None else messages
        prompt = tokens.count_chat_tokens((m.content for m in sent or []), enc)
        text = "".join(str(c.get("message", {}).get("content") or "") for c in response["choices"])
        completion = len(enc.encode(text, disallowed_special=()))
    cost = None
    if flavor.spec.pricing is not None:
        p = flavor.spec.pricing
        cost = round(
            (prompt * p.prompt_per_million + completion * p.completion_per_million) / 1e6, 8
        )
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost=cost,
    )


async def load_flavor(deps: Deps, namespace: str, name: str, why: str = "") -> Flavor:
    """The flavor (as read lately: ``Deps.cached``)."""
    found = await deps.cached(
        ("flavor", namespace, name), lambda: deps.kube.find(FLAVORS, namespace, name)
    )
    if found is None:
        raise JobFailed(
            "FlavorNotFound", f"Flavor {name!r}{why} does not exist in namespace {namespace!r}", 404
        )
    return Flavor.model_validate(found)


def endpoint_of(deps: Deps, flavor: Flavor, primary: bool) -> str:
    """Where to call a flavor: the server beside this worker for its own flavor, else the
    flavor's endpoint or the Service of its deployed servers."""
    endpoint = (deps.settings.endpoint if primary else None) or flavor.spec.endpoint
    endpoint = endpoint or flavor.status.endpoint
    if endpoint is None:
        raise JobFailed(
            "NoEndpoint",
            f"Flavor {flavor.metadata.name!r} has no endpoint yet (its pods are not ready)",
            503,
        )
    return endpoint


EMBEDDING_BATCH = 256
"""Texts per embeddings call: model servers batch on the GPU, but a request of
thousands of texts risks their request limits and memory (OpenAI takes 2,048)."""


def embedding_batches(texts: list[str]) -> list[list[str]]:
    """The texts in calls of at most ``EMBEDDING_BATCH``, in order."""
    return [texts[i : i + EMBEDDING_BATCH] for i in range(0, len(texts), EMBEDDING_BATCH)] or [[]]


def merged_embeddings(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """One OpenAI embeddings answer from the answers of consecutive batches: vectors
    indexed in order, usage summed."""
    data: list[dict[str, Any]] = []
    prompt = total = 0
    for answer in answers:
        for item in answer["data"]:
            data.append({**item, "index": len(data)})
        usage = answer.get("usage") or {}
        prompt += int(usage.get("prompt_tokens") or 0)
        total += int(usage.get("total_tokens") or usage.get("prompt_tokens") or 0)
    merged = {**answers[0], "data": data}
    if any(a.get("usage") for a in answers):
        merged["usage"] = {"prompt_tokens": prompt, "total_tokens": total}
    return merged


def merged_choices(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """One chat completion with a choice from each answer (``choices`` > 1), usage summed.
    The prompt is counted once per call, as the calls were made."""
    choices = [{**a["choices"][0], "index": i} for i, a in enumerate(answers)]
    merged = {**answers[0], "choices": choices}
    if all(a.get("usage") for a in answers):
        keys = ("prompt_tokens", "completion_tokens", "total_tokens")
        merged["usage"] = {k: sum(int(a["usage"].get(k) or 0) for a in answers) for k in keys}
    return merged


async def _call(
    deps: Deps,
    flavor: Flavor,
    endpoint: str,
    api_key: str | None,
    job: LLMJob,
    messages: list[Message] | None,
    emit: Callable[[dict[str, Any]], Awaitable[None]],
) -> dict[str, Any]:
    """One provider call: the job's own (chat, streamed chat, embeddings) or ``messages``."""
    speak, params = wire(flavor.spec.provider), job.spec.parameters
    to = Target(deps.http, endpoint, flavor.spec, api_key)
    if messages is not None:
        return await speak.chat(to, messages, params)
    if job.spec.task == "embeddings":
        parts = embedding_batches(job.spec.texts or [])
        return merged_embeddings([await speak.embed(to, part, params) for part in parts])
    chat = job.spec.messages or []
    if params is not None and (params.choices or 1) > 1:
        calls = [speak.chat(to, chat, params) for _ in range(params.choices or 1)]
        return merged_choices(list(await asyncio.gather(*calls)))
    if job.spec.stream:
        return await speak.chat_stream(to, chat, params, emit)
    return await speak.chat(to, chat, params)


async def call_with_retries(
    deps: Deps,
    flavor: Flavor,
    endpoint: str,
    job: LLMJob,
    messages: list[Message] | None = None,
) -> tuple[dict[str, Any], float]:
    """One flavor, retried within its ``retry`` on errors that may pass. ``messages``: a
    chat call with these instead of the job's own input (never streamed).

    Returns:
        The response, and how long the call that gave it took (ms).
    """
    try:
        ref = flavor.spec.api_key_secret_ref
        api_key = (
            None
            if ref is None
            else await deps.cached(
                ("secret", flavor.metadata.namespace, ref.name, ref.key),
                lambda: secrets.api_key(deps.kube, flavor),
            )
        )
    except secrets.SecretMissing as exc:
        raise JobFailed("SecretMissing", str(exc), 503) from exc
    retry = flavor.spec.retry
    key = streams.stream_key(job.metadata.uid, job.metadata.generation)
    sent = 0

    async def emit(chunk: dict[str, Any]) -> None:
        nonlocal sent
        sent += 1
        await streams.publish(deps.redis, key, chunk)

    for attempt in range(retry.attempts):
        try:
            async with deps.call_slot(flavor):
                started = time.monotonic()
                response = await _call(deps, flavor, endpoint, api_key, job, messages, emit)
        except ProviderError as exc:
            if sent:  # the client has part of an answer: another call cannot continue it
                raise ProviderError(
                    exc.reason,
                    f"{exc.message} (after {sent} streamed chunks)",
                    retryable=False,
                    status=exc.status,
                ) from exc
            if not exc.retryable or attempt == retry.attempts - 1:
                raise
            delay = backoff(retry, attempt, exc.retry_after)
            log.info(
                "%s on %s; retry %d in %.1fs", exc.reason, flavor.metadata.name, attempt + 1, delay
            )
            await asyncio.sleep(delay)
        else:
            if response.get("model") in (None, "", "-"):  # llama.cpp leaves it blank
                response["model"] = flavor.spec.model
            return response, (time.monotonic() - started) * 1000
    raise AssertionError("unreachable: the last attempt returns or raises")


async def complete(
    deps: Deps,
    job: LLMJob,
    messages: list[Message] | None = None,
    first: Flavor | None = None,
    beside: bool = True,
) -> Answer:
    """One answer: from ``first`` (default: the job's flavor), its fallbackFlavor when
    the prompt overflows its context, or its failoverFlavors when it keeps failing.

    Args:
        messages: a chat call with these instead of the job's own input.
        first: the flavor to ask first, when already loaded or not the job's own.
        beside: ``first`` is the job's own flavor, whose server may run beside this
            worker (settings.endpoint).
    """
    ns = job.metadata.namespace
    head = first or await load_flavor(deps, ns, job.spec.flavor)
    chain: list[tuple[Flavor, bool]] = [(head, beside)]
    fell_back = False
    last: ProviderError | None = None
    while chain:
        flavor, local = chain.pop(0)
        try:
            endpoint = endpoint_of(deps, flavor, local)
            response, ms = await call_with_retries(deps, flavor, endpoint, job, messages)
            usage = usage_of(response, job, flavor, messages)
            return Answer(response, usage, flavor.metadata.name, ms)
        except ProviderError as exc:
            if exc.reason == "ContextLengthExceeded":
                if flavor.spec.fallback_flavor and not fell_back:
                    fell_back = True
                    fallback = await load_flavor(
                        deps, ns, flavor.spec.fallback_flavor, " (fallbackFlavor)"
                    )
                    log.info(
                        "context of %s overflowed; falling back to %s",
                        flavor.metadata.name,
                        fallback.metadata.name,
                    )
                    chain = [(fallback, False)]
                    continue
                raise JobFailed(exc.reason, exc.message, 400) from exc
            if not exc.retryable:
                raise JobFailed(exc.reason, exc.message, 502) from exc
            last = exc
        if flavor is head:
            for name in flavor.spec.failover_flavors:
                chain.append((await load_flavor(deps, ns, name, " (failoverFlavors)"), False))
    assert last is not None
    tried = "retries and failover" if head.spec.failover_flavors else "retries"
    raise JobFailed(last.reason, f"{last.message} (gave up after {tried})", 502)
