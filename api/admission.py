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

from llmloom import ratelimit, tokens
from llmloom.api.errors import APIError
from llmloom.api.services import Services
from llmloom.ratelimit import RateState
from llmloom.resources import Flavor, LLMJobSpec, RateLimit


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


def chat_estimate(flavor: Flavor, contents: list[str], max_tokens: int | None) -> int:
    """Tokens a chat request may spend, as OpenAI's limits count them before it runs: the
    prompt, plus the completion it asks for at most."""
    enc = tokens.encoding_for(flavor.spec.model, flavor.spec.tokenizer)
    limit = flavor.spec.max_output_tokens
    completion = min(max_tokens, limit) if max_tokens and limit else max_tokens or 0
    return tokens.count_chat_tokens(contents, enc) + completion


def texts_estimate(flavor: Flavor, texts: list[str]) -> int:
    """Tokens of texts to embed."""
    enc = tokens.encoding_for(flavor.spec.model, flavor.spec.tokenizer)
    return sum(len(enc.encode(t, disallowed_special=())) for t in texts)


def spec_estimate(flavor: Flavor, spec: LLMJobSpec) -> int:
    """Tokens a job spec may spend, from what it holds inline (a document fetched later
    is charged when its job finishes)."""
    max_tokens = spec.parameters.max_tokens if spec.parameters else None
    if spec.messages:
        return chat_estimate(flavor, [m.content for m in spec.messages], max_tokens)
    if spec.texts:
        return texts_estimate(flavor, spec.texts)
    return 0


def refusal(
    decision: ratelimit.Decision,
    limits: ratelimit.TenantLimits,
    estimate: int,
    headers: dict[str, str],
    now: datetime,
) -> APIError:
    """The 429 of a refused request, worded and coded as OpenAI's."""
    if decision.outcome == "over_budget":
        period = decision.period
        left = max(0, (limits.token_budget or 0) - decision.budget_used)
        return APIError(
            429,
            f"You exceeded your token budget for this {period.kind} ({period.id}): "
            f"limit {limits.token_budget}, used {decision.budget_used}, left {left}"
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
    assert rate is not None
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
    counted = (
        limits.tokens_per_minute is not None
        or limits.token_budget is not None
        or per_flavor.tokens_per_minute is not None
    )
    # Counting is CPU work (a request may hold megabytes): off the event loop, and only
    # where a limit needs the number before the provider counts it.
    cost = await asyncio.to_thread(estimate) if counted else 0
    name = flavor.metadata.name
    rates = ratelimit.rates_for(
        namespace, name, limits, per_flavor.requests_per_minute, per_flavor.tokens_per_minute, cost
    )
    now = datetime.now(UTC)
    period = ratelimit.budget_period(limits.budget_period, now)
    decision = await ratelimit.admit(
        services.redis, namespace, name, rates, limits.token_budget, period, cost
    )
    headers = rate_headers(decision.states)
    if not decision.admitted:
        kind = decision.refused.kind if decision.refused else "budget"
        services.metrics.rate_limited.labels(namespace, kind).inc()
        raise refusal(decision, limits, cost, headers, now)
    return Admission(ratelimit.charge_for(namespace, name, decision, rates, cost), headers)
