"""What a tenant can use and has used: GET /v1/models (its flavors that can take work
now) and GET /v1/usage (its requests and tokens in the current budget period)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI

from llmloom import conditions, ratelimit, sharing, timestamps
from llmloom.api.deps import ServicesDep, TenantDep
from llmloom.api.errors import APIError, responses
from llmloom.api.protocol import (
    FlavorUsage,
    ModelEntry,
    ModelList,
    UsageLimits,
    UsagePeriod,
    UsageResponse,
)
from llmloom.resources import Flavor

router = APIRouter()


def model_entry(flavor: Flavor, created: int) -> dict[str, Any]:
    """A flavor as an OpenAI model object (with LLMLoom's extra fields)."""
    return {
        "id": flavor.metadata.name,
        "object": "model",
        "created": created,
        # A shared model belongs to the cluster's platform team, not to a tenant.
        "owned_by": "cluster" if flavor.shared else flavor.metadata.namespace,
        "llmloom": {
            "provider": flavor.spec.provider,
            "model": flavor.spec.model,
            "capabilities": flavor.spec.capabilities,
            "context_window": flavor.spec.context_window,
            "shared": flavor.shared,
        },
    }


def ready(flavor: Flavor) -> bool:
    return conditions.is_true([c.wire() for c in flavor.status.conditions], conditions.READY)


def _created(flavor: Flavor) -> int:
    return int(timestamps.epoch(flavor.metadata.creation_timestamp) or 0)


@router.get(
    "/v1/models", response_model=None, responses={200: {"model": ModelList}, **responses(401)}
)
async def list_models(services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """The tenant's Ready flavors and the Ready shared models granted to it (from the
    watch caches)."""
    data = [
        model_entry(flavor, _created(flavor))
        for flavor in services.catalog.visible(tenant)
        if ready(flavor)
    ]
    return {"object": "list", "data": sorted(data, key=lambda m: m["id"])}


@router.get(
    "/v1/models/{model}",
    response_model=None,
    responses={200: {"model": ModelEntry}, **responses(401, 404)},
)
async def get_model(model: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """One of the tenant's flavors or granted shared models, by name (from the watch
    caches)."""
    flavor = services.catalog.named(tenant, model)
    if flavor is None:
        raise APIError(
            404,
            f"The model '{model}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    return model_entry(flavor, _created(flavor))


def _cost(micros: int) -> float | None:
    return round(micros / 1_000_000, 6) if micros else None


def _flavor_usage(
    name: str, t: ratelimit.Totals, terms: sharing.Terms | None, pending: int
) -> FlavorUsage:
    view = FlavorUsage(
        flavor=name,
        requests=t.requests,
        prompt_tokens=t.prompt_tokens,
        completion_tokens=t.completion_tokens,
        total_tokens=t.total_tokens,
        cost=_cost(t.cost_micros),
    )
    if terms is not None:
        view.shared = True
        view.limits = UsageLimits(
            requests_per_minute=terms.requests_per_minute,
            tokens_per_minute=terms.tokens_per_minute,
            token_budget=terms.token_budget,
        )
        if terms.token_budget is not None:
            view.budget_remaining = max(0, terms.token_budget - t.total_tokens - pending)
    return view


def usage_view(
    tenant: str,
    limits: ratelimit.TenantLimits,
    period: ratelimit.BudgetPeriod,
    usage: ratelimit.Usage,
    shared: Mapping[str, sharing.Terms] | None = None,
) -> UsageResponse:
    """A tenant's usage as GET /v1/usage answers it (``shared``: its terms on the shared
    models among its flavors)."""
    shared = shared or {}
    totals = usage.totals
    budget = limits.token_budget
    remaining = None
    if budget is not None:
        remaining = max(0, budget - totals.total_tokens - usage.pending_tokens)
    return UsageResponse(
        tenant=tenant,
        period=UsagePeriod(type=period.kind, id=period.id, start=period.start, end=period.end),
        requests=totals.requests,
        prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens,
        total_tokens=totals.total_tokens,
        pending_tokens=usage.pending_tokens,
        budget_remaining=remaining,
        limits=UsageLimits(
            requests_per_minute=limits.requests_per_minute,
            tokens_per_minute=limits.tokens_per_minute,
            token_budget=budget,
        ),
        cost=_cost(totals.cost_micros),
        flavors=[
            _flavor_usage(name, t, shared.get(name), usage.flavor_pending.get(name, 0))
            for name, t in usage.flavors.items()
        ],
    )


@router.get("/v1/usage", responses=responses(401))
async def get_usage(services: ServicesDep, tenant: TenantDep) -> UsageResponse:
    """The tenant's requests and tokens in the current budget period, in all and per
    flavor, with its limits (an LLMLoom extension)."""
    limits = await services.limits.get(tenant)
    period = ratelimit.budget_period(limits.budget_period, datetime.now(UTC))
    usage = await ratelimit.read_usage(services.redis, tenant, period)
    shared = {}
    for name in usage.flavors:
        flavor = services.catalog.named(tenant, name)
        terms = sharing.terms(flavor, tenant) if flavor is not None else None
        if terms is not None:
            shared[name] = terms
    return usage_view(tenant, limits, period, usage, shared)


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
