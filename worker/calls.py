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
from dataclasses import dataclass
from typing import Any

from llmloom import secrets, streams, tokens, wire
from llmloom.kube import CLUSTER_FLAVORS, FLAVORS
from llmloom.resources import ClusterFlavor, Flavor, LLMJob, Retry, Usage
from llmloom.worker.bodies import Call, job_call
from llmloom.worker.deps import Deps, JobFailed
from llmloom.worker.providers import Emit, ProviderError, Target, inputs, wire_of

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


def usage_of(response: dict[str, Any], call: Call, flavor: Flavor) -> Usage:
    """Token usage: the provider's own counts, else counted with the flavor's tokenizer;
    the cost from the flavor's pricing."""
    reported = wire.reported_usage(response)
    if reported is not None:
        prompt, completion = reported
    else:
        enc = tokens.encoding_for(flavor.spec.model, flavor.spec.tokenizer)
        prompt = wire.prompt_tokens(call.endpoint, call.body, enc)
        text = wire.answer_text(call.endpoint, response)
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


async def find_flavor(deps: Deps, namespace: str, name: str) -> Flavor | None:
    """A flavor a job in ``namespace`` names (as read lately: ``Deps.cached``). A worker of
    a shared model reads ClusterFlavors only: its jobs name it, and the names in a
    ClusterFlavor (fallback, failover) mean ClusterFlavors."""
    if deps.serves_shared:
        shared = await deps.cached(
            ("clusterflavor", name), lambda: deps.kube.find(CLUSTER_FLAVORS, "", name)
        )
        return None if shared is None else ClusterFlavor.model_validate(shared)
    found = await deps.cached(
        ("flavor", namespace, name), lambda: deps.kube.find(FLAVORS, namespace, name)
    )
    return None if found is None else Flavor.model_validate(found)


async def load_flavor(deps: Deps, namespace: str, name: str, why: str = "") -> Flavor:
    """``find_flavor``, or the job fails with FlavorNotFound."""
    found = await find_flavor(deps, namespace, name)
    if found is None:
        where = "" if deps.serves_shared else f" in namespace {namespace!r}"
        kind = "ClusterFlavor" if deps.serves_shared else "Flavor"
        raise JobFailed("FlavorNotFound", f"{kind} {name!r}{why} does not exist{where}", 404)
    return found


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


def embedding_batches(call: Call) -> list[Call]:
    """An embeddings call as calls of at most ``EMBEDDING_BATCH`` inputs each, in order."""
    value = call.body.get("input")
    if not isinstance(value, list) or inputs(call.body) <= EMBEDDING_BATCH:
        return [call]
    return [
        call.but(input=value[i : i + EMBEDDING_BATCH])
        for i in range(0, len(value), EMBEDDING_BATCH)
    ]


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
    """One completion with a choice from each answer (OpenAI's ``n`` > 1), usage summed.
    The prompt is counted once per call, as the calls were made."""
    choices = [{**a["choices"][0], "index": i} for i, a in enumerate(answers)]
    merged = {**answers[0], "choices": choices}
    if all(a.get("usage") for a in answers):
        keys = ("prompt_tokens", "completion_tokens", "total_tokens")
        merged["usage"] = {k: sum(int(a["usage"].get(k) or 0) for a in answers) for k in keys}
    return merged


async def _send(
    deps: Deps,
    flavor: Flavor,
    endpoint: str,
    api_key: str | None,
    call: Call,
    emit: Emit | None,
) -> dict[str, Any]:
    """One answer from the flavor's server: embeddings in batches, ``n`` choices as one
    call each (not every server makes several), the rest as it is."""
    speak, to = wire_of(flavor.spec.provider), Target(deps.http, endpoint, flavor.spec, api_key)
    if call.endpoint == wire.EMBEDDINGS:
        # Floats from the server: an answer LLMLoom checks and stores; the API encodes it
        # as the client asked.
        parts = embedding_batches(call.but(encoding_format="float"))
        return merged_embeddings([await speak.call(to, part) for part in parts])
    n = wire.choices(call.body)
    if n > 1 and call.endpoint in (wire.CHAT, wire.COMPLETIONS):
        one = call.but(n=None)
        return merged_choices(list(await asyncio.gather(*(speak.call(to, one) for _ in range(n)))))
    return await speak.call(to, call, emit if call.stream else None)


async def call_with_retries(
    deps: Deps,
    flavor: Flavor,
    endpoint: str,
    job: LLMJob,
    call: Call,
) -> tuple[dict[str, Any], float]:
    """One flavor, retried within its ``retry`` on errors that may pass; a streamed call
    publishes its chunks for the API to relay.

    Returns:
        The response, and how long the call that gave it took (ms).
    """
    try:
        ref = flavor.spec.api_key_secret_ref
        home = flavor.home(deps.settings.release_namespace)
        api_key = (
            None
            if ref is None
            else await deps.cached(
                ("secret", home, ref.name, ref.key),
                lambda: secrets.api_key(deps.kube, flavor, deps.settings.release_namespace),
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
                response = await _send(deps, flavor, endpoint, api_key, call, emit)
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
    call: Call | None = None,
    first: Flavor | None = None,
    beside: bool = True,
) -> Answer:
    """One answer: from ``first`` (default: the job's flavor), its fallbackFlavor when
    the prompt overflows its context, or its failoverFlavors when it keeps failing.

    Args:
        call: what to send (default: the job's own request, stored or from its spec).
        first: the flavor to ask first, when already loaded or not the job's own.
        beside: ``first`` is the job's own flavor, whose server may run beside this
            worker (settings.endpoint).
    """
    ns = job.metadata.namespace
    head = first or await load_flavor(deps, ns, job.spec.flavor)
    call = call or await job_call(deps, job)
    chain: list[tuple[Flavor, bool]] = [(head, beside)]
    fell_back = False
    last: ProviderError | None = None
    while chain:
        flavor, local = chain.pop(0)
        try:
            endpoint = endpoint_of(deps, flavor, local)
            response, ms = await call_with_retries(deps, flavor, endpoint, job, call)
            usage = usage_of(response, call, flavor)
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
                raise JobFailed(exc.reason, exc.message, exc.client_status) from exc
            last = exc
        if flavor is head:
            for name in flavor.spec.failover_flavors:
                chain.append((await load_flavor(deps, ns, name, " (failoverFlavors)"), False))
    if last is None:  # no flavor was tried: cannot be, the chain starts with one
        raise JobFailed("NoFlavor", f"no flavor could be tried for {job.spec.flavor!r}", 502)
    tried = "retries and failover" if head.spec.failover_flavors else "retries"
    raise JobFailed(last.reason, f"{last.message} (gave up after {tried})", 502)
