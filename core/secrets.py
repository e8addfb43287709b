"""Reading the API keys that flavors name, with a clear error when one is missing."""

from __future__ import annotations

import base64

from llmloom.kube import SECRETS, Kube
from llmloom.resources import Flavor


class SecretMissing(Exception):
    """The Secret or key a flavor names does not exist."""


async def api_key(kube: Kube, flavor: Flavor, release_namespace: str) -> str | None:
    """The flavor's API key (a shared model's is in ``release_namespace``), None when it
    names none; raises SecretMissing."""
    ref = flavor.spec.api_key_secret_ref
    if ref is None:
        return None
    secret = await kube.find(SECRETS, flavor.home(release_namespace), ref.name)
    if secret is None:
        raise SecretMissing(
            f"Secret {ref.name!r} named by Flavor {flavor.metadata.name!r} does not exist"
        )
    value = secret.get("data", {}).get(ref.key)
    if value is None:
        raise SecretMissing(f"Secret {ref.name!r} has no key {ref.key!r}")
    return base64.b64decode(value).decode().strip()
