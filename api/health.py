"""/healthz (the process answers) and /readyz (Redis and the API server answer). /metrics
is served on a port of its own (api/main.py)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse

from llmloom.api.deps import ServicesDep

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """Ready when Redis and the API server answer and the flavors are in the cache."""
    checks: dict[str, str] = {}
    try:
        await services.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"failing: {exc}"
    try:
        await services.kube.version()
        checks["kubernetes"] = "ok"
    except Exception as exc:
        checks["kubernetes"] = f"failing: {exc!r}"
    checks["flavors"] = "ok" if services.catalog.synced else "not listed yet"
    checks["tokens"] = "ok" if services.auth.tokens.synced.is_set() else "not listed yet"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "failing", "checks": checks}, 200 if ready else 503
    )


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
