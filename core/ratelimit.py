"""Per-tenant rate limits and token budgets, kept in Redis.

A tenant (a namespace) may be held to requests and tokens per minute and to a
token budget per calendar period (UTC month or day); a Flavor's ``rateLimit``
holds every request to that flavor (an external account's own limits). The
tenant's numbers come from annotations on its Namespace (``llmloom.io/...``),
which only cluster admins can change, over defaults from the API's settings.

Rates use GCRA (the generic cell rate algorithm): each limiter is one Redis key
holding its theoretical arrival time (TAT). A limit of L per minute admits a
burst of L at once, then one unit every 60/L seconds; a refusal knows exactly
when the next unit fits (``Retry-After``), and nothing is kept per request.
Tokens are the same algorithm with a cost per request. One Lua script checks a
request against every limiter and the budget and charges all of them or none,
on Redis's clock, so API replicas agree without coordination.

A request is charged its estimated tokens at admission (the prompt, counted
with tiktoken, plus ``max_tokens`` when it sets one) and settled with the
tokens the provider counted once its job finishes: the difference is charged
or refunded to the token rates, and the budget's totals hold actual usage.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel
from redis.asyncio import Redis

from llmloom.kube import NAMESPACES, Kube, KubeError

log = logging.getLogger(__name__)

Kind = Literal["requests", "tokens"]
Period = Literal["month", "day"]
WINDOW_MS = 60_000.0
"""Every rate is per minute."""

REQUESTS_PER_MINUTE = "llmloom.io/requests-per-minute"
TOKENS_PER_MINUTE = "llmloom.io/tokens-per-minute"
TOKEN_BUDGET = "llmloom.io/token-budget"
TOKEN_BUDGET_PERIOD = "llmloom.io/token-budget-period"
UNLIMITED = "unlimited"
_SUFFIXES = {"k": 10**3, "M": 10**6, "G": 10**9}
# Usage of past periods stays readable for a while (an admin's look back), then expires.
_USAGE_TTL_SECONDS: dict[Period, int] = {"month": 100 * 86400, "day": 8 * 86400}


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TenantLimits:
    """What one tenant may spend; None is no limit."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    token_budget: int | None = None
    """Total tokens (prompt and completion) per budget period."""
    budget_period: Period = "month"


def parse_amount(raw: str, minimum: int = 0) -> int | None:
    """An annotation's number: digits with an optional k, M or G; ``unlimited`` is None.

    Raises:
        ValueError: anything else, or a number below ``minimum``.
    """
    text = raw.strip().replace("_", "")
    if text.lower() == UNLIMITED:
        return None
    factor = 1
    if text and text[-1] in _SUFFIXES:
        factor, text = _SUFFIXES[text[-1]], text[:-1]
    if not re.fullmatch(r"[0-9]+", text):
        raise ValueError(f"{raw!r} is neither a whole number (k, M, G allowed) nor 'unlimited'")
    value = int(text) * factor
    if value < minimum:
        raise ValueError(f"{raw!r} is below the smallest allowed value, {minimum}")
    return value


def tenant_limits(
    annotations: Mapping[str, str], defaults: TenantLimits
) -> tuple[TenantLimits, list[str]]:
    """A tenant's limits from its Namespace's annotations over the defaults.

    Returns:
        The limits, and one problem per annotation that did not parse; its default
        applies (a typo must not take a tenant's API away, nor lift its limit silently:
        the API logs each problem).
    """
    problems: list[str] = []

    def amount(annotation: str, default: int | None, minimum: int) -> int | None:
        if annotation not in annotations:
            return default
        try:
            return parse_amount(annotations[annotation], minimum)
        except ValueError as exc:
            problems.append(f"{annotation}: {exc}")
            return default

    limits = TenantLimits(
        requests_per_minute=amount(REQUESTS_PER_MINUTE, defaults.requests_per_minute, 1),
        tokens_per_minute=amount(TOKENS_PER_MINUTE, defaults.tokens_per_minute, 1),
        token_budget=amount(TOKEN_BUDGET, defaults.token_budget, 0),
        budget_period=defaults.budget_period,
    )
    period = annotations.get(TOKEN_BUDGET_PERIOD)
    if period is not None:
        if period.strip() in ("month", "day"):
            limits = replace(limits, budget_period="month" if period.strip() == "month" else "day")
        else:
            problems.append(f"{TOKEN_BUDGET_PERIOD}: {period!r} is neither 'month' nor 'day'")
    return limits, problems


class TenantLimitsSource:
    """Each tenant's limits, read from its Namespace and cached for a few seconds, so that
    a request costs no API-server round trip and a changed annotation applies soon."""

    def __init__(self, kube: Kube, defaults: TenantLimits, cache_seconds: float) -> None:
        self.kube, self.defaults, self.cache_seconds = kube, defaults, cache_seconds
        self._cache: dict[str, tuple[TenantLimits, float]] = {}

    async def get(self, tenant: str) -> TenantLimits:
        hit = self._cache.get(tenant)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        try:
            namespace = await self.kube.find(NAMESPACES, "", tenant)
        except KubeError as exc:
            # Without `get namespaces` (or with the API server refusing) the defaults
            # still hold every tenant; say why the annotations are not read.
            log.warning("cannot read the limits of namespace %s: %s", tenant, exc)
            namespace = None
        annotations = ((namespace or {}).get("metadata") or {}).get("annotations") or {}
        limits, problems = tenant_limits(annotations, self.defaults)
        for problem in problems:
            log.warning("namespace %s: ignoring %s", tenant, problem)
        self._cache[tenant] = (limits, time.monotonic() + self.cache_seconds)
        return limits


# --------------------------------------------------------------------------- periods


@dataclass(frozen=True)
class BudgetPeriod:
    """One calendar period (UTC) of a token budget."""

    kind: Period
    id: str
    """``2026-11`` for a month, ``2026-11-22`` for a day."""
    start: datetime
    end: datetime


def budget_period(kind: Period, now: datetime) -> BudgetPeriod:
    """The period of the given kind that ``now`` falls in."""
    now = now.astimezone(UTC)
    if kind == "day":
        start = datetime(now.year, now.month, now.day, tzinfo=UTC)
        return BudgetPeriod(kind, start.strftime("%Y-%m-%d"), start, start + timedelta(days=1))
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    end = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return BudgetPeriod(kind, start.strftime("%Y-%m"), start, end)


def usage_ttl(period: BudgetPeriod) -> int:
    """How long a period's usage hash is kept after its last change."""
    return _USAGE_TTL_SECONDS[period.kind]


def usage_key(tenant: str, period: BudgetPeriod) -> str:
    """The Redis hash of a tenant's usage in one period."""
    return f"llmloom:usage:{tenant}:{period.id}"


# --------------------------------------------------------------------------- rates


@dataclass(frozen=True)
class Rate:
    """One GCRA limiter a request is held to, and what the request costs it."""

    key: str
    kind: Kind
    limit: int
    """Units per minute (and the largest burst)."""
    cost: int
    holder: str
    """Whose limit it is, for messages: ``tenant team-a`` or ``flavor gpt-4o``."""

    @property
    def interval_ms(self) -> float:
        """Time one unit takes to come back."""
        return WINDOW_MS / self.limit


def rate_key(tenant: str | None, kind: Kind, flavor: str | None = None) -> str:
    """A limiter's key: a tenant's, a tenant's flavor's, a tenant's share of a shared
    model (``flavor`` as ``@name``), or a shared model's as a whole (tenant None)."""
    scope = tenant if not flavor else flavor if tenant is None else f"{tenant}/{flavor}"
    return f"llmloom:rate:{scope}:{kind}"


@dataclass(frozen=True)
class SharedLimits:
    """A tenant's limits on a shared model (its ClusterFlavor's terms for the tenant)."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    token_budget: int | None = None


def rates_for(
    tenant: str,
    flavor: str,
    limits: TenantLimits,
    flavor_requests: int | None,
    flavor_tokens: int | None,
    tokens: int,
    shared: SharedLimits | None = None,
) -> list[Rate]:
    """The limiters of one request: the tenant's, then its flavor's, where set. For a shared
    model (``shared`` given), the flavor's own limits hold every tenant together, and the
    tenant's share of it is held to its terms."""
    rows: list[tuple[Kind, int | None, int, str | None, str]] = [
        ("requests", limits.requests_per_minute, 1, tenant, ""),
        ("tokens", limits.tokens_per_minute, tokens, tenant, ""),
    ]
    if shared is None:
        rows += [
            ("requests", flavor_requests, 1, tenant, flavor),
            ("tokens", flavor_tokens, tokens, tenant, flavor),
        ]
    else:
        rows += [
            ("requests", shared.requests_per_minute, 1, tenant, f"@{flavor}"),
            ("tokens", shared.tokens_per_minute, tokens, tenant, f"@{flavor}"),
            ("requests", flavor_requests, 1, None, f"@{flavor}"),
            ("tokens", flavor_tokens, tokens, None, f"@{flavor}"),
        ]

    def holder(who: str | None, of_flavor: str) -> str:
        if not of_flavor:
            return f"tenant {who}"
        if of_flavor.startswith("@"):
            name = of_flavor[1:]
            return f"shared model {name}" if who is None else f"tenant {who} on shared model {name}"
        return f"flavor {of_flavor}"

    return [
        Rate(rate_key(who, kind, of_flavor or None), kind, limit, cost, holder(who, of_flavor))
        for kind, limit, cost, who, of_flavor in rows
        if limit is not None
    ]


@dataclass(frozen=True)
class RateState:
    """Where one limiter stands, as the x-ratelimit-* headers tell it."""

    kind: Kind
    limit: int
    remaining: int
    reset_seconds: float
    """Time until the limiter is full again."""


def rate_state(rate: Rate, backlog_ms: float) -> RateState:
    """A limiter's state from its backlog (TAT minus now): a full minute of backlog is
    nothing left; each interval less is one unit more."""
    backlog = max(0.0, backlog_ms)
    # The epsilon keeps float error from turning 29.999999 units into 29.
    remaining = math.floor((WINDOW_MS - backlog) / rate.interval_ms + 1e-9)
    return RateState(rate.kind, rate.limit, max(0, min(rate.limit, remaining)), backlog / 1000)


# --------------------------------------------------------------------------- admission

# KEYS: the n GCRA keys, then the tenant's usage hash for the period.
# ARGV: n; interval (ms per unit) and cost of each limiter; the budget (-1: none);
#       the estimated tokens; the flavor; the usage hash's TTL in seconds.
#       Then the tenant's budget on the flavor (-1: none; its usage is the usage hash's
#       f:<flavor>:total_tokens and f:<flavor>:pending_tokens).
# Returns: outcome (0 admitted, 1 rate limited, 2 larger than a whole minute of a
#          rate, 3 over budget, 4 over the budget on the flavor), retry-after ms, the
#          refusing limiter's index (1-based), tokens used in the period (of the budget
#          that refused, or the tenant's), then each limiter's backlog (TAT - now) in ms.
ADMIT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local window = 60000
local n = tonumber(ARGV[1])
local usage = KEYS[n + 1]
local budget = tonumber(ARGV[2 * n + 2])
local estimate = tonumber(ARGV[2 * n + 3])
local outcome, retry, refused, used = 0, 0, 0, 0
if budget >= 0 then
  used = tonumber(redis.call('HGET', usage, 'total_tokens') or '0')
    + tonumber(redis.call('HGET', usage, 'pending_tokens') or '0')
  if used >= budget or used + estimate > budget then
    outcome = 3
  end
end
local fbudget = tonumber(ARGV[2 * n + 6])
local fpending = 'f:' .. ARGV[2 * n + 4] .. ':pending_tokens'
local ftotal = 'f:' .. ARGV[2 * n + 4] .. ':total_tokens'
if outcome == 0 and fbudget >= 0 then
  local fused = tonumber(redis.call('HGET', usage, ftotal) or '0')
    + tonumber(redis.call('HGET', usage, fpending) or '0')
  if fused >= fbudget or fused + estimate > fbudget then
    outcome, used = 4, fused
  end
end
local tats = {}
for i = 1, n do
  local interval = tonumber(ARGV[2 * i])
  local cost = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tats[i] = tat
  if outcome == 0 then
    if cost * interval > window then
      outcome, refused = 2, i
    elseif tat + cost * interval - now > window then
      outcome, refused, retry = 1, i, tat + cost * interval - now - window
    end
  end
end
if outcome == 0 then
  for i = 1, n do
    local new = tats[i] + tonumber(ARGV[2 * i + 1]) * tonumber(ARGV[2 * i])
    if new > now then
      redis.call('SET', KEYS[i], string.format('%.3f', new), 'PX', math.ceil(new - now) + 1000)
    end
    tats[i] = new
  end
  local flavor = 'f:' .. ARGV[2 * n + 4] .. ':requests'
  redis.call('HINCRBY', usage, 'requests', 1)
  redis.call('HINCRBY', usage, flavor, 1)
  if estimate > 0 then
    redis.call('HINCRBY', usage, 'pending_tokens', estimate)
    if fbudget >= 0 then
      redis.call('HINCRBY', usage, fpending, estimate)
    end
  end
  redis.call('EXPIRE', usage, ARGV[2 * n + 5])
end
local out = {outcome, string.format('%.3f', retry), refused, used}
for i = 1, n do
  out[#out + 1] = string.format('%.3f', tats[i] - now)
end
return out
"""

Outcome = Literal["admitted", "rate_limited", "too_large", "over_budget", "over_flavor_budget"]
_OUTCOMES: tuple[Outcome, ...] = (
    "admitted",
    "rate_limited",
    "too_large",
    "over_budget",
    "over_flavor_budget",
)


@dataclass(frozen=True)
class Decision:
    """What admission decided for one request, and where its limiters stand now."""

    outcome: Outcome
    states: list[RateState]
    period: BudgetPeriod
    refused: Rate | None = None
    retry_after: float = 0.0
    """Seconds until the refused request would fit (rate_limited)."""
    budget_used: int = 0
    """Tokens used and reserved in the period when a budget applies."""

    @property
    def admitted(self) -> bool:
        return self.outcome == "admitted"


def decision_from_reply(reply: list[Any], rates: list[Rate], period: BudgetPeriod) -> Decision:
    """The admit script's reply, read."""

    def num(v: Any) -> float:
        return float(v.decode() if isinstance(v, bytes) else v)

    outcome, retry_ms, refused, used = (num(v) for v in reply[:4])
    states = [rate_state(r, num(b)) for r, b in zip(rates, reply[4:], strict=True)]
    return Decision(
        outcome=_OUTCOMES[int(outcome)],
        states=states,
        period=period,
        refused=rates[int(refused) - 1] if refused else None,
        retry_after=retry_ms / 1000,
        budget_used=int(used),
    )


async def admit(
    redis: Redis,
    tenant: str,
    flavor: str,
    rates: list[Rate],
    budget: int | None,
    period: BudgetPeriod,
    tokens: int,
    flavor_budget: int | None = None,
) -> Decision:
    """Check one request against its limiters, the tenant's budget and its budget on the
    flavor (a shared model's terms); charge them if it fits (one request, ``tokens``
    estimated tokens), or nothing if it does not."""
    keys, args = admit_call(tenant, flavor, rates, budget, period, tokens, flavor_budget)
    reply = await redis.eval(ADMIT_SCRIPT, len(keys), *keys, *args)
    return decision_from_reply(list(reply), rates, period)


def admit_call(
    tenant: str,
    flavor: str,
    rates: list[Rate],
    budget: int | None,
    period: BudgetPeriod,
    tokens: int,
    flavor_budget: int | None = None,
) -> tuple[list[str], list[str | int | float]]:
    """The keys and arguments of ``ADMIT_SCRIPT`` for one request."""
    keys = [r.key for r in rates] + [usage_key(tenant, period)]
    args: list[str | int | float] = [len(rates)]
    for r in rates:
        args += [repr(r.interval_ms), r.cost]
    args += [-1 if budget is None else budget, tokens, flavor, _USAGE_TTL_SECONDS[period.kind]]
    args += [-1 if flavor_budget is None else flavor_budget]
    return keys, args


# --------------------------------------------------------------------------- settling


class Charge(BaseModel):
    """The estimate a running request was charged, to settle when its job finishes."""

    tenant: str
    flavor: str
    usage_key: str
    usage_ttl: int
    estimate: int
    token_rates: list[tuple[str, float]]
    """Key and interval of each token limiter the estimate went to."""
    flavor_pending: bool = False
    """The estimate is pending on the flavor too (a budget on it was checked)."""


def charge_for(
    tenant: str,
    flavor: str,
    decision: Decision,
    rates: list[Rate],
    tokens: int,
    flavor_budget: bool = False,
) -> Charge:
    """What to settle later for a request that was admitted."""
    return Charge(
        tenant=tenant,
        flavor=flavor,
        usage_key=usage_key(tenant, decision.period),
        usage_ttl=_USAGE_TTL_SECONDS[decision.period.kind],
        estimate=tokens,
        token_rates=[(r.key, r.interval_ms) for r in rates if r.kind == "tokens"],
        flavor_pending=flavor_budget,
    )


def charge_key(uid: str, version: int) -> str:
    """Where the charge of one job version waits for the job to finish."""
    return f"llmloom:charge:{uid}:v{version}"


# KEYS: the usage hash, then the token GCRA keys.
# ARGV: estimate, prompt tokens, completion tokens, the flavor that answered, the usage
#       hash's TTL, the flavor whose pending tokens hold the estimate too ('' none),
#       the cost in millionths, then each token limiter's interval.
SETTLE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local estimate, prompt, completion = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local usage, f = KEYS[1], 'f:' .. ARGV[4] .. ':'
if estimate ~= 0 then
  redis.call('HINCRBY', usage, 'pending_tokens', -estimate)
  if ARGV[6] ~= '' then
    redis.call('HINCRBY', usage, 'f:' .. ARGV[6] .. ':pending_tokens', -estimate)
  end
end
for name, value in pairs({prompt_tokens = prompt, completion_tokens = completion,
                          total_tokens = prompt + completion}) do
  redis.call('HINCRBY', usage, name, value)
  redis.call('HINCRBY', usage, f .. name, value)
end
local cost = tonumber(ARGV[7])
if cost ~= 0 then
  redis.call('HINCRBY', usage, 'cost_micros', cost)
  redis.call('HINCRBY', usage, f .. 'cost_micros', cost)
end
redis.call('EXPIRE', usage, ARGV[5])
local delta = prompt + completion - estimate
if delta ~= 0 then
  for i = 2, #KEYS do
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    local new = tat + delta * tonumber(ARGV[6 + i])
    if new <= now then
      redis.call('DEL', KEYS[i])
    else
      redis.call('SET', KEYS[i], string.format('%.3f', new), 'PX', math.ceil(new - now) + 1000)
    end
  end
end
return 1
"""


@dataclass(frozen=True)
class Settled:
    """Tokens a finished request was charged, for the metrics."""

    tenant: str
    flavor: str
    prompt_tokens: int
    completion_tokens: int


async def hold(redis: Redis, uid: str, version: int, charge: Charge, ttl: int) -> None:
    """Keep a running job's charge until it finishes (or ``ttl`` seconds pass)."""
    await redis.set(charge_key(uid, version), charge.model_dump_json(), ex=ttl)


async def apply(
    redis: Redis,
    charge: Charge,
    prompt: int,
    completion: int,
    flavor: str | None = None,
    cost_micros: int = 0,
) -> Settled:
    """Replace a charge's estimate with the tokens actually spent (0 and 0: a refund), and
    add what they cost (millionths of the flavor's currency)."""
    answered = flavor or charge.flavor
    keys, args = settle_call(charge, prompt, completion, answered, cost_micros)
    await redis.eval(SETTLE_SCRIPT, len(keys), *keys, *args)
    return Settled(charge.tenant, answered, prompt, completion)


def settle_call(
    charge: Charge, prompt: int, completion: int, answered: str, cost_micros: int = 0
) -> tuple[list[str], list[str | int]]:
    """The keys and arguments of ``SETTLE_SCRIPT`` for one finished request."""
    keys = [charge.usage_key, *(key for key, _ in charge.token_rates)]
    args: list[str | int] = [charge.estimate, prompt, completion, answered, charge.usage_ttl]
    args += [charge.flavor if charge.flavor_pending else "", cost_micros]
    args += [repr(interval) for _, interval in charge.token_rates]
    return keys, args


def spent(usage: Mapping[str, Any] | None) -> tuple[int, int]:
    """Prompt and completion tokens from a job's usage (as in ``status.usage``)."""
    usage = usage or {}
    return int(usage.get("promptTokens") or 0), int(usage.get("completionTokens") or 0)


def cost_micros(usage: Mapping[str, Any] | None) -> int:
    """A job's cost (``status.usage.cost``, from its flavor's pricing) in millionths: the
    usage hashes count whole numbers."""
    return round(float((usage or {}).get("cost") or 0.0) * 1_000_000)


async def claim(redis: Redis, uid: str, version: int) -> Charge | None:
    """Take a finished job's charge to settle it, once: None when there is none (the job was
    not admitted by the API, or another waiter or API replica took it first)."""
    raw = await redis.getdel(charge_key(uid, version))
    return None if raw is None else Charge.model_validate_json(raw)


async def claim_many(redis: Redis, versions: list[tuple[str, int]]) -> list[Charge | None]:
    """``claim`` for many job versions (uid, version) in one round trip."""
    if not versions:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for uid, version in versions:
            pipe.getdel(charge_key(uid, version))
        raws = await pipe.execute()
    return [None if raw is None else Charge.model_validate_json(raw) for raw in raws]


# --------------------------------------------------------------------------- usage


@dataclass(frozen=True)
class Totals:
    """Requests and tokens of a tenant, or of one of its flavors, in a period."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_micros: int = 0
    """What the tokens cost at the answering flavors' prices, in millionths."""


@dataclass(frozen=True)
class Usage:
    """A tenant's usage in one budget period."""

    totals: Totals
    pending_tokens: int
    """Estimates of requests still running."""
    flavors: dict[str, Totals]
    """Requests by the flavor asked for, tokens by the flavor that answered."""
    flavor_pending: dict[str, int] = field(default_factory=dict)
    """Estimates of running requests, per flavor held to a budget (a shared model's)."""


def usage_from_hash(fields: Mapping[str, str]) -> Usage:
    """A usage hash (``requests``, ``total_tokens``, ``f:<flavor>:<field>``...) read."""
    tenant: dict[str, int] = {}
    flavors: dict[str, dict[str, int]] = {}
    for name, value in fields.items():
        if name.startswith("f:"):
            flavor, _, field = name[2:].rpartition(":")
            flavors.setdefault(flavor, {})[field] = int(value)
        else:
            tenant[name] = int(value)
    known = set(Totals.__dataclass_fields__)
    return Usage(
        totals=Totals(**{k: v for k, v in tenant.items() if k in known}),
        pending_tokens=max(0, tenant.get("pending_tokens", 0)),
        flavors={
            f: Totals(**{k: v for k, v in values.items() if k in known})
            for f, values in sorted(flavors.items())
        },
        flavor_pending={
            f: max(0, values["pending_tokens"])
            for f, values in flavors.items()
            if "pending_tokens" in values
        },
    )


async def read_usage(redis: Redis, tenant: str, period: BudgetPeriod) -> Usage:
    """A tenant's usage in a period."""
    raw = await redis.hgetall(usage_key(tenant, period))
    fields = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }
    return usage_from_hash(fields)
