"""GET /v1/models: the flavors of the caller's tenant that can take work now."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, FastAPI

from llmloom import conditions
from llmloom.api.deps import ServicesDep, TenantDep
from llmloom.api.errors import APIError
from llmloom.kube import FLAVORS
from llmloom.resources import Flavor

router = APIRouter()


def model_entry(flavor: Flavor, created: int) -> dict[str, Any]:
    """A flavor as an OpenAI model object (with LLMLoom's extra fields)."""
    return {
        "id": flavor.metadata.name,
        "object": "model",
        "created": created,
        "owned_by": flavor.metadata.namespace,
        "llmloom": {
            "provider": flavor.spec.provider,
            "model": flavor.spec.model,
            "capabilities": flavor.spec.capabilities,
            "context_window": flavor.spec.context_window,
        },
    }


def ready(flavor: Flavor) -> bool:
    return conditions.is_true([c.wire() for c in flavor.status.conditions], conditions.READY)


def _created(item: dict[str, Any]) -> int:
    ts = item["metadata"].get("creationTimestamp")
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()) if ts else 0


@router.get("/v1/models")
async def list_models(services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """The tenant's Ready flavors."""
    data = []
    for item in await services.kube.list(FLAVORS, tenant):
        flavor = Flavor.model_validate(item)
        if ready(flavor):
            data.append(model_entry(flavor, _created(item)))
    return {"object": "list", "data": sorted(data, key=lambda m: m["id"])}


@router.get("/v1/models/{model}")
async def get_model(model: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """One of the tenant's flavors, by name."""
    item = await services.kube.find(FLAVORS, tenant, model)
    if item is None:
        raise APIError(
            404,
            f"The model '{model}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    return model_entry(Flavor.model_validate(item), _created(item))


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
