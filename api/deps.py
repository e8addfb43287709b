"""FastAPI dependencies, as ``Annotated`` aliases the routes use."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from llmloom.api.services import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

# Declares the bearer token in the OpenAPI document; TokenAuth reads the header itself, to
# tell a missing token from a malformed header in its 401s.
_bearer = HTTPBearer(auto_error=False, description="An API token: `llmloom token create`")


async def get_tenant(
    services: ServicesDep,
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> str:
    return services.auth.tenant(request.headers.get("authorization"))


TenantDep = Annotated[str, Depends(get_tenant)]
