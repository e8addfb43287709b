"""Bearer-token authentication: which tenant (namespace) a request acts for.

Tokens' hashes come from a watch of APITokens (``apitokens``), indexed by hash:
a request costs no API-server round trip, and a deleted (revoked) token stops
working as soon as the watch brings the deletion.
"""

from __future__ import annotations

from datetime import UTC, datetime

from llmloom import apitokens
from llmloom.api.errors import APIError
from llmloom.informer import Informer
from llmloom.kube import API_TOKENS, Kube
from llmloom.resources import APIToken


def _unauthorized(message: str) -> APIError:
    return APIError(
        401,
        message,
        "invalid_request_error",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


def by_hash(token: APIToken) -> str:
    return token.spec.sha256


class TokenAuth:
    """Maps bearer tokens to tenants, from the watch of APITokens."""

    def __init__(self, tokens: Informer[APIToken]) -> None:
        self.tokens = tokens

    @classmethod
    def watching(cls, kube: Kube) -> TokenAuth:
        """Tokens of every namespace, from a watch (started by ``tokens.start()``)."""
        return cls(Informer(kube, API_TOKENS, APIToken.model_validate, {"sha256": by_hash}))

    def tenant(self, authorization: str | None) -> str:
        """The namespace of the caller, or a 401 APIError."""
        if not authorization:
            raise _unauthorized(
                "You didn't provide an API key: send 'Authorization: Bearer <token>'."
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("The Authorization header must be 'Bearer <token>'.")
        if token.startswith(apitokens.TOKEN_PREFIX):
            now = datetime.now(UTC)
            for stored in self.tokens.by("sha256", apitokens.token_hash(token)):
                if apitokens.valid(stored, token, now):
                    return stored.metadata.namespace
        raise _unauthorized("Incorrect API key provided.")
