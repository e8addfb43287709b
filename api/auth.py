"""Bearer-token authentication: which tenant (namespace) a request acts for.

Verified tokens are cached for ``token_cache_seconds`` so that a request costs
no API-server round trip; a revoked token stops working within that time.
"""

from __future__ import annotations

import time

from llmloom import apitokens
from llmloom.api.errors import APIError
from llmloom.kube import Kube


def _unauthorized(message: str) -> APIError:
    return APIError(
        401,
        message,
        "invalid_request_error",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


class TokenAuth:
    """Maps bearer tokens to tenants, with a short-lived cache."""

    def __init__(self, kube: Kube, cache_seconds: float) -> None:
        self.kube = kube
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[str, float]] = {}

    async def tenant(self, authorization: str | None) -> str:
        """The namespace of the caller, or a 401 APIError."""
        if not authorization:
            raise _unauthorized(
                "You didn't provide an API key: send 'Authorization: Bearer <token>'."
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("The Authorization header must be 'Bearer <token>'.")
        digest = apitokens.token_hash(token)
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        namespace = await apitokens.tenant_of(self.kube, token)
        if namespace is None:
            self._cache.pop(digest, None)
            raise _unauthorized("Incorrect API key provided.")
        self._cache[digest] = (namespace, time.monotonic() + self.cache_seconds)
        return namespace
