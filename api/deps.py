"""FastAPI dependencies, as ``Annotated`` aliases the routes use."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from llmloom.api.services import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_tenant(
    services: ServicesDep, authorization: Annotated[str | None, Header()] = None
) -> str:
    return await services.auth.tenant(authorization)


TenantDep = Annotated[str, Depends(get_tenant)]
