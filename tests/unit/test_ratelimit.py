"""Rate limits and budgets without Redis: configuration, periods, headers, refusals, and the
admission and settling Lua scripts themselves, run by Lua 5.1 (Redis's) over a stand-in."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import lupa.lua51
import pytest

from llmloom import ratelimit
from llmloom.api import admission, serving
from llmloom.api.models import usage_view
from llmloom.ratelimit import Rate, RateState, TenantLimits
from llmloom.resources import Flavor

# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("raw", "value"),
    [("600", 600), ("10k", 10_000), ("2M", 2_000_000), (" 1_000 ", 1000), ("unlimited", None)],
)
def test_amounts_read_as_an_admin_writes_them(raw: str, value: int | None) -> None:
    assert ratelimit.parse_amount(raw) == value


@pytest.mark.parametrize("raw", ["ten", "-5", "1.5k", "", "10 k", "5K"])
def test_other_amounts_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="whole number"):
        ratelimit.parse_amount(raw)


def test_annotations_override_the_defaults_and_typos_keep_them() -> None:
    defaults = TenantLimits(requests_per_minute=100, tokens_per_minute=5000, token_budget=None)
    limits, problems = ratelimit.tenant_limits(
        {
            ratelimit.REQUESTS_PER_MINUTE: "30",
            ratelimit.TOKENS_PER_MINUTE: "lots",
            ratelimit.TOKEN_BUDGET: "1M",
            ratelimit.TOKEN_BUDGET_PERIOD: "day",
            "unrelated.io/annotation": "x",
        },
        defaults,
    )
    assert limits == TenantLimits(30, 5000, 1_000_000, "day")
    assert len(problems) == 1 and ratelimit.TOKENS_PER_MINUTE in problems[0]


def test_rates_cannot_be_zero_but_a_budget_can() -> None:
    limits, problems = ratelimit.tenant_limits(
        {ratelimit.REQUESTS_PER_MINUTE: "0", ratelimit.TOKEN_BUDGET: "0"}, TenantLimits()
    )
    assert limits.requests_per_minute is None and limits.token_budget == 0
    assert len(problems) == 1 and "smallest allowed value, 1" in problems[0]


def test_unlimited_lifts_a_default() -> None:
    limits, _ = ratelimit.tenant_limits(
        {ratelimit.TOKEN_BUDGET: "unlimited"}, TenantLimits(token_budget=10)
    )
    assert limits.token_budget is None


def test_an_unknown_period_keeps_the_default() -> None:
    limits, problems = ratelimit.tenant_limits(
        {ratelimit.TOKEN_BUDGET_PERIOD: "week"}, TenantLimits()
    )
    assert limits.budget_period == "month" and "'week'" in problems[0]


# --------------------------------------------------------------------------- periods


def test_budget_periods_are_utc_calendar_months_and_days() -> None:
    december = ratelimit.budget_period("month", datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    assert december.id == "2026-12"
    assert (december.start, december.end) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    day = ratelimit.budget_period("day", datetime(2026, 2, 28, 12, tzinfo=UTC))
    assert (day.id, day.end) == ("2026-02-28", datetime(2026, 3, 1, tzinfo=UTC))


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.12, "120ms"), (1.5, "1.5s"), (2, "2s"), (360, "6m0s"), (3723.4, "1h2m3.4s")],
)
def test_durations_read_like_openais(seconds: float, text: str) -> None:
    assert admission.format_duration(seconds) == text


def rate(kind: ratelimit.Kind = "requests", limit: int = 30, cost: int = 1) -> Rate:
    return Rate(f"k-{kind}-{limit}", kind, limit, cost, "tenant t")


def test_remaining_units_follow_the_backlog() -> None:
    assert ratelimit.rate_state(rate(), 0) == RateState("requests", 30, 30, 0)
    # 30 per minute: a unit every 2 s; 2 s of backlog is one unit gone.
    assert ratelimit.rate_state(rate(), 2000).remaining == 29
    assert ratelimit.rate_state(rate(), 2001).remaining == 28
    assert ratelimit.rate_state(rate(), 60_000).remaining == 0
    assert ratelimit.rate_state(rate(), 90_000) == RateState("requests", 30, 0, 90)


def test_headers_show_the_tightest_limit_of_each_kind() -> None:
    headers = admission.rate_headers(
        [
            RateState("requests", 100, 99, 0.6),
            RateState("requests", 3, 1, 40),  # the flavor's: fewer left
            RateState("tokens", 1000, 990, 0.6),
        ]
    )
    assert headers == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "40s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "990",
        "x-ratelimit-reset-tokens": "600ms",
    }
    assert admission.rate_headers([]) == {}


def test_rates_of_a_request_are_the_tenants_and_its_flavors() -> None:
    rates = ratelimit.rates_for(
        "team-a", "gpt", TenantLimits(requests_per_minute=10), None, 500, 42
    )
    assert [(r.kind, r.limit, r.cost, r.holder) for r in rates] == [
        ("requests", 10, 1, "tenant team-a"),
        ("tokens", 500, 42, "flavor gpt"),
    ]
    assert rates[0].key != ratelimit.rate_key("team-b", "requests")  # tenants never share


def test_on_a_shared_model_the_tenants_share_is_its_own_and_the_models_limit_is_everyones() -> None:
    terms = ratelimit.SharedLimits(requests_per_minute=5, tokens_per_minute=None)
    mine = ratelimit.rates_for("team-a", "llama", TenantLimits(), 100, None, 7, terms)
    theirs = ratelimit.rates_for("team-b", "llama", TenantLimits(), 100, None, 7, terms)
    assert [(r.limit, r.holder) for r in mine] == [
        (5, "tenant team-a on shared model llama"),
        (100, "shared model llama"),
    ]
    assert mine[0].key != theirs[0].key  # each tenant's share apart
    assert mine[1].key == theirs[1].key  # the model's own limit holds them together
    # Never the key of a tenant's own flavor of the same name.
    own = ratelimit.rates_for("team-a", "llama", TenantLimits(), 100, None, 7)
    assert own[0].key not in {r.key for r in mine}


# --------------------------------------------------------------------------- the scripts


class FakeRedis:
    """What the scripts use of Redis (strings with expiry, hashes, TIME), with a clock the
    test moves; replies converted as Redis converts Lua values."""

    def __init__(self) -> None:
        self.now_ms = 1_800_000_000_000.0
        self.strings: dict[str, tuple[str, float]] = {}
        self.hashes: dict[str, dict[str, int]] = {}
        self.lua = lupa.lua51.LuaRuntime()

    def call(self, cmd: str, *args: Any) -> Any:
        cmd = cmd.upper()
        if cmd == "TIME":
            sec, usec = divmod(int(self.now_ms * 1000), 1_000_000)
            return self.lua.table(str(sec), str(usec))
        if cmd == "GET":
            value = self.strings.get(args[0])
            return value[0] if value and value[1] > self.now_ms else False
        if cmd == "SET":
            assert args[2] == "PX"
            self.strings[args[0]] = (str(args[1]), self.now_ms + float(args[3]))
            return "OK"
        if cmd == "DEL":
            return int(self.strings.pop(args[0], None) is not None)
        if cmd == "HGET":
            field = self.hashes.get(args[0], {}).get(args[1])
            return False if field is None else str(field)
        if cmd == "HINCRBY":
            h = self.hashes.setdefault(args[0], {})
            h[args[1]] = h.get(args[1], 0) + int(args[2])
            return h[args[1]]
        if cmd == "EXPIRE":
            return 1
        raise AssertionError(f"unexpected command {cmd}")

    def eval(self, script: str, keys: list[str], args: list[Any]) -> list[Any]:
        fn = self.lua.eval(f"function(redis, KEYS, ARGV)\n{script}\nend")
        redis = self.lua.table_from({"call": lambda *a: self.call(*a)})
        reply = fn(redis, self.lua.table(*keys), self.lua.table(*(str(a) for a in args)))
        if lupa.lua51.lua_type(reply) != "table":
            return [reply]
        # Redis turns Lua numbers into integers (truncated) and strings into bytes.
        return [int(v) if isinstance(v, float | int) else v.encode() for v in reply.values()]

    def advance(self, seconds: float) -> None:
        self.now_ms += seconds * 1000


PERIOD = ratelimit.budget_period("month", datetime(2027, 1, 15, tzinfo=UTC))


def admit(
    redis: FakeRedis, rates: list[Rate], budget: int | None = None, tokens: int = 0
) -> ratelimit.Decision:
    """What ``ratelimit.admit`` sends, run over the stand-in."""
    keys, args = ratelimit.admit_call("t", "f", rates, budget, PERIOD, tokens)
    return ratelimit.decision_from_reply(
        redis.eval(ratelimit.ADMIT_SCRIPT, keys, args), rates, PERIOD
    )


def settle(redis: FakeRedis, charge: ratelimit.Charge, prompt: int, completion: int) -> None:
    keys, args = ratelimit.settle_call(charge, prompt, completion, charge.flavor)
    redis.eval(ratelimit.SETTLE_SCRIPT, keys, args)


def test_a_minutes_worth_at_once_then_one_per_interval() -> None:
    redis, rpm = FakeRedis(), rate(limit=30)
    for _ in range(30):
        assert admit(redis, [rpm]).admitted
    refused = admit(redis, [rpm])
    assert refused.outcome == "rate_limited" and refused.refused == rpm
    assert refused.retry_after == pytest.approx(2.0)
    assert refused.states == [RateState("requests", 30, 0, 60)]
    redis.advance(1.9)
    assert not admit(redis, [rpm]).admitted
    redis.advance(0.1)
    ok = admit(redis, [rpm])
    assert ok.admitted and ok.states[0].remaining == 0
    redis.advance(60)
    assert admit(redis, [rpm]).states[0].remaining == 29  # full again, less this one


def test_tokens_are_a_cost_and_a_request_larger_than_a_minute_never_fits() -> None:
    redis = FakeRedis()
    tpm = rate("tokens", limit=600, cost=400)
    assert admit(redis, [tpm], tokens=400).states[0].remaining == 200
    second = admit(redis, [tpm], tokens=400)
    # 200 tokens more must come back, at 10 per second.
    assert second.outcome == "rate_limited" and second.retry_after == pytest.approx(20)
    huge = admit(redis, [rate("tokens", limit=600, cost=601)], tokens=601)
    assert huge.outcome == "too_large"


def test_a_refusal_charges_no_limiter() -> None:
    redis = FakeRedis()
    rpm, tpm = rate(limit=5), rate("tokens", limit=100, cost=80)
    assert admit(redis, [rpm, tpm], tokens=80).admitted
    assert admit(redis, [rpm, tpm], tokens=80).refused == tpm
    # The refused request took no request slot: four are left, as after one request.
    assert admit(redis, [rpm], tokens=0).states[0].remaining == 3


def test_the_budget_counts_actual_usage_and_running_estimates() -> None:
    redis = FakeRedis()
    tpm = rate("tokens", limit=1000, cost=100)
    first = admit(redis, [tpm], budget=250, tokens=100)
    charge = ratelimit.charge_for("t", "f", first, [tpm], 100)
    assert admit(redis, [tpm], budget=250, tokens=100).admitted  # 200 of 250 reserved
    third = admit(redis, [tpm], budget=250, tokens=100)
    assert third.outcome == "over_budget" and third.budget_used == 200
    # The first request spent 30 tokens in fact: 70 come back to the budget and the rate.
    settle(redis, charge, 10, 20)
    usage = ratelimit.usage_from_hash(
        {k: str(v) for k, v in redis.hashes[ratelimit.usage_key("t", PERIOD)].items()}
    )
    assert usage.totals == ratelimit.Totals(
        requests=2, prompt_tokens=10, completion_tokens=20, total_tokens=30
    )
    assert usage.pending_tokens == 100
    assert admit(redis, [tpm], budget=250, tokens=100).admitted  # 30 + 100 + 100 <= 250
    assert admit(redis, [], budget=250, tokens=0).admitted
    assert not admit(redis, [], budget=230, tokens=0).admitted  # exhausted: 230 used


def test_a_budget_on_a_shared_model_counts_that_models_tokens_only() -> None:
    redis = FakeRedis()

    def ask(flavor: str, tokens: int, budget: int | None) -> ratelimit.Decision:
        keys, args = ratelimit.admit_call("t", flavor, [], None, PERIOD, tokens, budget)
        return ratelimit.decision_from_reply(
            redis.eval(ratelimit.ADMIT_SCRIPT, keys, args), [], PERIOD
        )

    first = ask("llama", 60, 100)
    assert first.admitted
    charge = ratelimit.charge_for("t", "llama", first, [], 60, flavor_budget=True)
    refused = ask("llama", 60, 100)  # 60 pending + 60 > 100
    assert refused.outcome == "over_flavor_budget" and refused.budget_used == 60
    assert ask("other", 500, None).admitted  # another flavor's tokens do not count
    settle(redis, charge, 20, 10)  # 30 spent: 70 of the budget are left
    assert ask("llama", 60, 100).admitted
    assert not ask("llama", 20, 100).admitted  # 30 spent + 60 pending + 20 > 100


def test_settling_more_than_the_estimate_is_a_debt_on_the_rate() -> None:
    redis = FakeRedis()
    tpm = rate("tokens", limit=600, cost=10)
    charge = ratelimit.charge_for("t", "f", admit(redis, [tpm], tokens=10), [tpm], 10)
    settle(redis, charge, 10, 1190)  # 1200 tokens: two minutes' worth
    later = admit(redis, [rate("tokens", limit=600, cost=0)], tokens=0)
    assert later.outcome == "rate_limited" and later.retry_after == pytest.approx(60)


def test_usage_hashes_read_per_flavor() -> None:
    usage = ratelimit.usage_from_hash(
        {
            "requests": "3",
            "total_tokens": "50",
            "pending_tokens": "-2",
            "f:gpt-4o:requests": "2",
            "f:gpt-4o:total_tokens": "40",
            "f:mini:total_tokens": "10",
        }
    )
    assert usage.totals.requests == 3 and usage.pending_tokens == 0
    assert usage.flavors["gpt-4o"] == ratelimit.Totals(requests=2, total_tokens=40)
    assert list(usage.flavors) == ["gpt-4o", "mini"]


def test_the_usage_view_shows_what_is_left_of_the_budget() -> None:
    usage = ratelimit.Usage(ratelimit.Totals(4, 100, 50, 150), 30, {})
    view = usage_view("team-a", TenantLimits(token_budget=1000), PERIOD, usage)
    assert view.budget_remaining == 820 and view.period.id == "2027-01"
    assert usage_view("team-a", TenantLimits(), PERIOD, usage).budget_remaining is None


# --------------------------------------------------------------------------- refusals


NOW = datetime(2027, 1, 31, 23, 0, tzinfo=UTC)


def decision(outcome: ratelimit.Outcome, refused: Rate | None, retry: float = 0) -> Any:
    return ratelimit.Decision(outcome, [], ratelimit.budget_period("month", NOW), refused, retry)


def test_a_rate_refusal_is_openais_429_with_retry_after() -> None:
    err = admission.refusal(
        decision("rate_limited", rate(limit=30), 1.2), TenantLimits(), 0, {}, NOW
    )
    assert (err.status, err.type, err.code) == (429, "requests", "rate_limit_exceeded")
    assert err.headers == {"Retry-After": "2", "retry-after-ms": "1200"}
    assert "tenant t on requests per min (RPM): Limit 30" in err.message
    assert "try again in 1.2s" in err.message


def test_a_request_too_large_is_not_worth_retrying() -> None:
    big = rate("tokens", limit=100, cost=500)
    err = admission.refusal(decision("too_large", big), TenantLimits(), 500, {}, NOW)
    assert (err.type, err.code) == ("tokens", "rate_limit_exceeded")
    assert err.headers == {"x-should-retry": "false"} and "Requested 500" in err.message


def test_a_spent_budget_is_insufficient_quota_until_the_period_ends() -> None:
    spent = ratelimit.Decision(
        "over_budget", [], ratelimit.budget_period("month", NOW), budget_used=1000
    )
    err = admission.refusal(spent, TenantLimits(token_budget=1000), 20, {"x": "1"}, NOW)
    assert (err.status, err.type, err.code) == (429, "insufficient_quota", "insufficient_quota")
    assert err.headers == {"x": "1", "Retry-After": "3600", "x-should-retry": "false"}
    assert "resets at 2027-02-01T00:00:00Z" in err.message


# --------------------------------------------------------------------------- admission


def flavor(status: dict[str, Any] | None = None, **spec: Any) -> Flavor:
    return Flavor.model_validate(
        {
            "metadata": {"name": "f", "generation": 2},
            "spec": {"provider": "vllm", "model": "m", "endpoint": "http://x/v1", **spec},
            "status": status or {},
        }
    )


def test_a_chat_estimate_is_the_prompt_and_the_completion_it_may_ask_for() -> None:
    chat = {"messages": [{"role": "user", "content": "Hello there"}]}
    prompt = admission.estimate(flavor(), "/v1/chat/completions", chat)
    assert prompt == 3 + 2 + 3  # per message, the text, the reply's priming
    asked = {**chat, "max_tokens": 100}
    assert admission.estimate(flavor(), "/v1/chat/completions", asked) == prompt + 100
    held = admission.estimate(flavor(maxOutputTokens=16), "/v1/chat/completions", asked)
    assert held == prompt + 16
    # Each of n choices is a call of its own: its prompt and its completion.
    assert admission.estimate(flavor(), "/v1/chat/completions", {**asked, "n": 2}) == 2 * (
        prompt + 100
    )


def ready(status: str, reason: str, generation: int = 2) -> dict[str, Any]:
    cond = {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": "0/2 nodes are available",
        "lastTransitionTime": "2027-01-01T00:00:00Z",
        "observedGeneration": generation,
    }
    return {"conditions": [cond]}


def deployed(status: dict[str, Any]) -> Flavor:
    f = flavor()
    return f.model_copy(
        update={
            "spec": f.spec.model_copy(update={"endpoint": None, "deploy": {}}),
            "status": type(f.status).model_validate(status),
        }
    )


def test_only_a_deployed_flavor_with_nowhere_to_run_is_unavailable() -> None:
    reason = serving.unavailable_reason(deployed(ready("False", "Unschedulable")))
    assert reason == "Unschedulable: 0/2 nodes are available"
    assert serving.unavailable_reason(deployed(ready("False", "ModelServerStarting"))) is None
    assert serving.unavailable_reason(deployed(ready("True", "ScaledToZero"))) is None
    assert serving.unavailable_reason(deployed({})) is None
    # A verdict on an older spec says nothing about this one.
    assert serving.unavailable_reason(deployed(ready("False", "Unschedulable", 1))) is None
    # An external endpoint's failures are reported by the job itself (502 with the reason).
    assert serving.unavailable_reason(flavor(status=ready("False", "Unschedulable"))) is None
