"""API tokens: bearer tokens that map a caller to a tenant (a namespace).

A token is shown once, at creation; only its sha256 is kept, in a Secret in the
tenant's namespace labelled for LLMLoom. The label carries a prefix of the hash
so that the API finds the Secret of a token with one label-selector list
across namespaces; the full hash is then compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from llmloom.kube import SECRETS, Kube, Obj

LABEL_TOKEN = "llmloom.io/api-token"
LABEL_HASH = "llmloom.io/token-hash"
TOKEN_PREFIX = "llmloom-"


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The sha256 of a token, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def hash_label(digest: str) -> str:
    """The label value that finds a token's Secret (label values hold 63 characters)."""
    return digest[:48]


def secret_manifest(namespace: str, name: str, token: str, description: str = "") -> Obj:
    """The Secret that stores one token's hash."""
    digest = token_hash(token)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {LABEL_TOKEN: "true", LABEL_HASH: hash_label(digest)},
            "annotations": {"llmloom.io/description": description} if description else {},
        },
        "type": "Opaque",
        "data": {"sha256": base64.b64encode(digest.encode()).decode()},
    }


async def create(kube: Kube, namespace: str, name: str, description: str = "") -> str:
    """Create a token for a tenant and return it (the only time it is visible)."""
    token = new_token()
    await kube.create(SECRETS, namespace, secret_manifest(namespace, name, token, description))
    return token


def matches(secret: Obj, token: str) -> bool:
    """Whether a token Secret holds this token's hash."""
    stored = base64.b64decode(secret.get("data", {}).get("sha256", "")).decode()
    return hmac.compare_digest(stored, token_hash(token))


async def tenant_of(kube: Kube, token: str) -> str | None:
    """The namespace a token belongs to, or None for an unknown or revoked token."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    selector = f"{LABEL_TOKEN}=true,{LABEL_HASH}={hash_label(token_hash(token))}"
    for secret in await kube.list(SECRETS, label_selector=selector):
        if matches(secret, token):
            ns: str = secret["metadata"]["namespace"]
            return ns
    return None
