"""Admission: a request is held to its tenant's and flavor's rate limits and its
tenant's token budget before it becomes a job (the decision itself is one Lua
script in ``llmloom.ratelimit``); a refusal is answered as OpenAI answers one,
and an admitted request carries OpenAI's ``x-ratelimit-*`` headers."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from llmloom import ratelimit, sharing, tokens, wire
from llmloom.api.errors import APIError
from llmloom.api.services import Services
from llmloom.ratelimit import RateState
from llmloom.resources import Endpoint, Flavor, LLMJobSpec, RateLimit


def format_duration(seconds: float) -> str:
    """A duration as OpenAI's reset headers write it (Go's format): 120ms, 1.5s, 6m0s."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


def rate_headers(states: list[RateState]) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers: per kind, the limiter with the least left."""
    headers: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        of_kind = [s for s in states if s.kind == kind]
        if not of_kind:
            continue
        tightest = min(of_kind, key=lambda s: (s.remaining, -s.reset_seconds))
        headers[f"x-ratelimit-limit-{kind}"] = str(tightest.limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(tightest.remaining)
        headers[f"x-ratelimit-reset-{kind}"] = format_duration(tightest.reset_seconds)
    return headers


@dataclass
class Admission:
    """An admitted request: its x-ratelimit-* headers and the charge to settle."""

    charge: ratelimit.Charge
    headers: dict[str, str] = field(default_factory=dict)


def estimate(flavor: Flavor, endpoint: Endpoint, body: dict[str, Any]) -> int:
    """Tokens a request may spend, as OpenAI's limits count them before it runs: its
    prompt, plus the completion it asks for at most (held to the flavor's own limit), for
    each choice it asks for."""
    enc = tokens.encoding_for(flavor.spec.model, flavor.spec.tokenizer)
    asked = wire.completion_limit(endpoint, body)
    limit = flavor.spec.max_output_tokens
    completion = min(asked, limit) if asked and limit else asked or 0
    n = wire.choices(body) if endpoint in (wire.CHAT, wire.COMPLETIONS) else 1
    return n * (wire.prompt_tokens(endpoint, body, enc) + completion)


def spec_estimate(flavor: Flavor, spec: LLMJobSpec) -> int:
    """Tokens a job spec may spend, from what it holds inline (a document fetched later
    is charged when its job finishes)."""
    if spec.task == "document":
        return 0
    from_spec = spec_body(spec)
    return estimate(flavor, from_spec[0], from_spec[1])


def spec_body(spec: LLMJobSpec) -> tuple[Endpoint, dict[str, Any]]:
    """What a job written by a person counts as: its messages and tools, or its texts."""
    if spec.task == "embeddings":
        return wire.EMBEDDINGS, {"input": list(spec.texts or [])}
    messages = [
        {
            "content": m.content
            if m.parts is None
            else [{"type": "text", "text": p.text} for p in m.parts if p.text],
            "tool_calls": [c.model_dump() for c in m.tool_calls or []],
        }
        for m in spec.messages or []
    ]
    body: dict[str, Any] = {"messages": messages}
    if spec.tools:
        body["tools"] = [t.model_dump(exclude_none=True) for t in spec.tools]
    if spec.parameters is not None and spec.parameters.max_tokens is not None:
        body["max_tokens"] = spec.parameters.max_tokens
    if spec.parameters is not None and spec.parameters.choices:
        body["n"] = spec.parameters.choices
    return wire.CHAT, body


def refusal(
    decision: ratelimit.Decision,
    limits: ratelimit.TenantLimits,
    estimate: int,
    headers: dict[str, str],
    now: datetime,
    flavor: str = "",
    shared: ratelimit.SharedLimits | None = None,
) -> APIError:
    """The 429 of a refused request, worded and coded as OpenAI's."""
    if decision.outcome in ("over_budget", "over_flavor_budget"):
        period = decision.period
        on_flavor = decision.outcome == "over_flavor_budget" and shared is not None
        budget = (shared.token_budget if on_flavor and shared else limits.token_budget) or 0
        whose = (
            f"your token budget on the shared model '{flavor}'"
            if on_flavor
            else ("your token budget")
        )
        left = max(0, budget - decision.budget_used)
        return APIError(
            429,
            f"You exceeded {whose} for this {period.kind} ({period.id}): "
            f"limit {budget}, used {decision.budget_used}, left {left}"
            + (f", this request needs about {estimate}" if estimate else "")
            + f". It resets at {period.end.strftime('%Y-%m-%dT%H:%M:%SZ')}.",
            "insufficient_quota",
            code="insufficient_quota",
            # The SDKs retry 429s; waiting minutes cannot help a spent budget.
            headers={
                **headers,
                "Retry-After": str(math.ceil((period.end - now).total_seconds())),
                "x-should-retry": "false",
            },
        )
    rate = decision.refused
    if rate is None:  # a refusal names its limiter; none would be the script's bug
        raise RuntimeError(f"refused ({decision.outcome}) by no limiter")
    unit = "requests per min (RPM)" if rate.kind == "requests" else "tokens per min (TPM)"
    if decision.outcome == "too_large":
        return APIError(
            429,
            f"Request too large for {rate.holder} on {unit}: Limit {rate.limit}, "
            f"Requested {rate.cost}. Send a smaller request.",
            rate.kind,
            code="rate_limit_exceeded",
            headers={**headers, "x-should-retry": "false"},
        )
    wait = format_duration(decision.retry_after)
    return APIError(
        429,
        f"Rate limit reached for {rate.holder} on {unit}: Limit {rate.limit}, "
        f"Requested {rate.cost}. Please try again in {wait}.",
        rate.kind,
        code="rate_limit_exceeded",
        headers={
            **headers,
            "Retry-After": str(max(1, math.ceil(decision.retry_after))),
            "retry-after-ms": str(max(1, math.ceil(decision.retry_after * 1000))),
        },
    )


async def admit(
    services: Services, namespace: str, flavor: Flavor, estimate: Callable[[], int]
) -> Admission:
    """Hold a request to its tenant's and flavor's limits and its tenant's budget: the 429
    when it does not fit, else what it was charged."""
    limits = await services.limits.get(namespace)
    per_flavor = flavor.spec.rate_limit or RateLimit()
    terms = sharing.terms(flavor, namespace)
    shared = (
        None
        if terms is None
        else ratelimit.SharedLimits(
            terms.requests_per_minute, terms.tokens_per_minute, terms.token_budget
        )
    )
    counted = (
        limits.tokens_per_minute is not None
        or limits.token_budget is not None
        or per_flavor.tokens_per_minute is not None
        or (shared is not None and (shared.tokens_per_minute, shared.token_budget) != (None, None))
    )
    # Counting is CPU work (a request may hold megabytes): off the event loop, and only
    # where a limit needs the number before the provider counts it.
    cost = await asyncio.to_thread(estimate) if counted else 0
    name = flavor.metadata.name
    rates = ratelimit.rates_for(
        namespace,
        name,
        limits,
        per_flavor.requests_per_minute,
        per_flavor.tokens_per_minute,
        cost,
        shared,
    )
    now = datetime.now(UTC)
    period = ratelimit.budget_period(limits.budget_period, now)
    flavor_budget = shared.token_budget if shared else None
    decision = await ratelimit.admit(
        services.redis, namespace, name, rates, limits.token_budget, period, cost, flavor_budget
    )
    headers = rate_headers(decision.states)
    if not decision.admitted:
        kind = decision.refused.kind if decision.refused else "budget"
        services.metrics.rate_limited.labels(namespace, kind).inc()
        raise refusal(decision, limits, cost, headers, now, name, shared)
    charge = ratelimit.charge_for(namespace, name, decision, rates, cost, flavor_budget is not None)
    return Admission(charge, headers)
