"""API tokens: bearer tokens that map a caller to a tenant (a namespace).

A token is shown once, at creation; only its sha256 is kept, in an APIToken
object (LLMLoom's own kind) in the tenant's namespace. RBAC scopes that kind
apart from Secrets: the API watches APITokens (an index by hash answers each
request from memory) and reads no Secret at all. Deleting the object revokes
the token as soon as the API's watch sees it.

Tokens made before APIToken existed were labelled Secrets; ``llmloom token
migrate`` turns each into an APIToken of the same name and hash
(``from_legacy_secret``), with a cluster admin's rights, once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime

from llmloom import API_VERSION, timestamps
from llmloom.kube import API_TOKENS, Kube, Obj
from llmloom.resources import APIToken

TOKEN_PREFIX = "llmloom-"
LEGACY_LABEL = "llmloom.io/api-token"
"""The label of the Secrets that held tokens' hashes before APIToken."""


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The sha256 of a token, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def manifest(
    namespace: str,
    name: str,
    digest: str,
    description: str = "",
    expires_at: datetime | None = None,
) -> Obj:
    """The APIToken that stores one token's hash."""
    spec: Obj = {"sha256": digest}
    if description:
        spec["description"] = description
    if expires_at is not None:
        spec["expiresAt"] = timestamps.format(expires_at)
    return {
        "apiVersion": API_VERSION,
        "kind": "APIToken",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


async def create(
    kube: Kube,
    namespace: str,
    name: str,
    description: str = "",
    expires_at: datetime | None = None,
) -> str:
    """Create a token for a tenant and return it (the only time it is visible)."""
    token = new_token()
    body = manifest(namespace, name, token_hash(token), description, expires_at)
    await kube.create(API_TOKENS, namespace, body)
    return token


def matches(stored: APIToken, token: str) -> bool:
    """Whether an APIToken holds this token's hash (compared in constant time)."""
    return hmac.compare_digest(stored.spec.sha256, token_hash(token))


def valid(stored: APIToken, token: str, now: datetime) -> bool:
    """Whether a token matches an APIToken that has not expired."""
    expires = stored.spec.expires_at
    return matches(stored, token) and (expires is None or now < expires)


def from_legacy_secret(secret: Obj) -> Obj | None:
    """The APIToken of a token Secret made before APIToken (same name, namespace and
    hash), or None for a Secret that holds none."""
    meta = secret.get("metadata") or {}
    if (meta.get("labels") or {}).get(LEGACY_LABEL) != "true":
        return None
    raw = (secret.get("data") or {}).get("sha256")
    if not raw:
        return None
    digest = base64.b64decode(raw).decode().strip()
    description = (meta.get("annotations") or {}).get("llmloom.io/description", "")
    return manifest(meta["namespace"], meta["name"], digest, description or "migrated")
