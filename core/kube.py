"""A small async Kubernetes client for the API and the worker.

Authentication is loaded by the official ``kubernetes`` package (kubeconfig or
in-cluster service account, with token refresh), and requests go through one
pooled aiohttp session (``llmloom.httpio`` says why not httpx). Only the verbs
LLMLoom needs are here, over any resource named by a ``Resource``; errors come
back as ``KubeError`` with the API server's own message.
"""

from __future__ import annotations

import builtins
import copy
import json as _json
import os
import re
import ssl
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from llmloom import GROUP, VERSION, httpio

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    """Where a kind of object lives in the API: group, version, plural."""

    group: str
    version: str
    plural: str

    def path(self, namespace: str | None = None, name: str | None = None, sub: str = "") -> str:
        """The URL path of the collection or of one object (and a subresource)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


FLAVORS = Resource(GROUP, VERSION, "flavors")
CLUSTER_FLAVORS = Resource(GROUP, VERSION, "clusterflavors")
API_TOKENS = Resource(GROUP, VERSION, "apitokens")
LLMJOBS = Resource(GROUP, VERSION, "llmjobs")
LLMBATCHES = Resource(GROUP, VERSION, "llmbatches")
SECRETS = Resource("", "v1", "secrets")
PODS = Resource("", "v1", "pods")
SERVICES = Resource("", "v1", "services")
DEPLOYMENTS = Resource("apps", "v1", "deployments")
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts")
ROLE_BINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings")
NAMESPACES = Resource("", "v1", "namespaces")


# What Kubernetes accepts as an object's name (RFC 1123 subdomain). A string that is not
# one names nothing, and in a URL path it could name something else: never look it up.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def is_name(value: str, max_length: int = 253) -> bool:
    """Whether a string can be the name of an object (of a kind whose names are at most
    ``max_length`` characters)."""
    return len(value) <= max_length and _NAME.fullmatch(value) is not None


REQUEST_SECONDS = 30.0
"""How long connecting, and each read of an answer, may take."""
WATCH_SLACK_SECONDS = 60.0
"""How much longer than its ``timeoutSeconds`` a watch may stay silent before the
connection is taken for dead."""


class KubeError(Exception):
    """An error answer of the API server."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code, self.reason, self.message = code, reason, message


def _error(reply: httpio.Reply, reason: str) -> KubeError:
    """The API server's Status answer as a KubeError (its reason and message)."""
    try:
        status = reply.json()
    except ValueError:
        status = None
    if not isinstance(status, dict):
        status = {"reason": reason, "message": reply.text}
    return KubeError(reply.status, status.get("reason", ""), status.get("message", ""))


AUTH_REFRESH_SECONDS = 10.0
"""How often the token is read again (its refresh hook run)."""


def bearer(cfg: k8s_client.Configuration) -> str | None:
    """The Authorization header value of a token-based configuration ("Bearer ..."), if any.

    Calling this runs the configuration's refresh hook, so rotated tokens are picked up.
    """
    # The kubernetes client has stored it under either key, depending on its version.
    value = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
        "authorization"
    )
    return str(value) if value else None


def load_config(kubeconfig: str | None = None) -> k8s_client.Configuration:
    """The kubeconfig named, $KUBECONFIG, ~/.kube/config, or the in-cluster account."""
    cfg = k8s_client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    if kubeconfig or Path(path).exists():
        k8s_config.load_kube_config(config_file=path, client_configuration=cfg)
    else:
        k8s_config.load_incluster_config(client_configuration=cfg)
    return cfg


def _ssl_context(cfg: k8s_client.Configuration) -> ssl.SSLContext:
    ctx = (
        ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        if cfg.ssl_ca_cert
        else (ssl.create_default_context())
    )
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    if not cfg.verify_ssl:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Kube:
    """Async access to the API server; one per process, closed with ``aclose``.

    The session is made on first use, on the loop that uses it.
    """

    def __init__(self, cfg: k8s_client.Configuration, max_connections: int = 100) -> None:
        self.cfg = cfg
        self.base = cfg.host.rstrip("/")
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._auth: tuple[float, str | None] | None = None

    @classmethod
    def connect(cls, kubeconfig: str | None = None, max_connections: int = 100) -> Kube:
        """A client from the kubeconfig (or in-cluster account)."""
        return cls(load_config(kubeconfig), max_connections)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = httpio.session(self.max_connections, _ssl_context(self.cfg))
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        # The configuration's refresh hook picks up rotated tokens (a pod's projected
        # token is renewed well before it expires), but it costs a tenth of a request's
        # CPU: it runs every AUTH_REFRESH_SECONDS, not per request.
        now = time.monotonic()
        if self._auth is None or now - self._auth[0] > AUTH_REFRESH_SECONDS:
            self._auth = (now, bearer(self.cfg))
        token = self._auth[1]
        headers = {"Authorization": token} if token else {}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        seconds: float = REQUEST_SECONDS,
    ) -> Obj:
        body = None if json is None else _json.dumps(json).encode()
        async with self.session.request(
            method,
            self.base + path,
            data=body,
            params=params,
            headers=self._headers(content_type if body is not None else None),
            timeout=httpio.timeout(seconds),
        ) as resp:
            reply = await httpio.read(resp)
        if reply.status >= 400:
            raise _error(reply, resp.reason or "")
        result: Obj = reply.json()
        return result

    async def version(self) -> Obj:
        """The API server's /version (what readiness checks ask)."""
        return await self._call("GET", "/version", seconds=5)

    async def get(self, res: Resource, namespace: str, name: str) -> Obj:
        return await self._call("GET", res.path(namespace, name))

    async def find(self, res: Resource, namespace: str, name: str) -> Obj | None:
        """The object, or None when it does not exist."""
        try:
            return await self.get(res, namespace, name)
        except KubeError as exc:
            if exc.code == 404:
                return None
            raise

    async def list(
        self, res: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> list[Obj]:
        params = {"labelSelector": label_selector} if label_selector else None
        items: list[Obj] = (await self._call("GET", res.path(namespace), params=params))["items"]
        return items

    async def watch(
        self,
        res: Resource,
        namespace: str | None,
        resource_version: str,
        timeout_seconds: int = 300,
        field_selector: str | None = None,
    ) -> AsyncGenerator[Obj, None]:
        """Watch events (``{"type", "object"}``) after ``resource_version``, until the
        server ends the watch. A 410 Gone arrives as an ``ERROR`` event: list again."""
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if field_selector:
            params["fieldSelector"] = field_selector
        async with self.session.get(
            self.base + res.path(namespace),
            params=params,
            headers=self._headers(),
            # The server ends the watch after timeout_seconds; past that, the connection
            # is dead (a bookmark or an event arrives at least every minute or so).
            timeout=httpio.timeout(timeout_seconds + WATCH_SLACK_SECONDS),
        ) as resp:
            if resp.status >= 400:
                raise _error(await httpio.read(resp), resp.reason or "")
            async for line in httpio.lines(resp):
                yield _json.loads(line)

    async def list_with_version(
        self, res: Resource, namespace: str | None = None, field_selector: str | None = None
    ) -> tuple[builtins.list[Obj], str]:
        """The objects and the collection's resourceVersion, to watch from."""
        params = {"fieldSelector": field_selector} if field_selector else None
        body = await self._call("GET", res.path(namespace), params=params)
        return body["items"], body["metadata"]["resourceVersion"]

    async def create(self, res: Resource, namespace: str, body: Obj) -> Obj:
        return await self._call("POST", res.path(namespace), json=body)

    async def delete(self, res: Resource, namespace: str, name: str) -> Obj:
        return await self._call("DELETE", res.path(namespace, name))

    async def merge_patch(self, res: Resource, namespace: str, name: str, patch: Obj) -> Obj:
        return await self._call(
            "PATCH",
            res.path(namespace, name),
            json=patch,
            content_type="application/merge-patch+json",
        )

    async def apply(self, res: Resource, namespace: str, body: Obj, manager: str) -> Obj:
        """Server-side apply: the object as this manager wants it; fields it owns and
        leaves out are removed, fields of other managers are kept."""
        return await self._call(
            "PATCH",
            res.path(namespace, body["metadata"]["name"]),
            json=body,
            params={"fieldManager": manager, "force": "true"},
            content_type="application/apply-patch+yaml",
        )

    async def update_status(
        self,
        res: Resource,
        namespace: str,
        name: str,
        mutate: Callable[[Obj], None],
        uid: str | None = None,
        generation: int | None = None,
        attempts: int = 8,
        current: Obj | None = None,
    ) -> Obj | None:
        """Read-modify-write of an object's status, retried on conflicts.

        ``mutate`` changes the status in place on the freshest object; the write
        is conditional on its resourceVersion, so nobody else's change is lost,
        and skipped when ``mutate`` changed nothing.

        ``current``, an object just read, saves the first read: the write still
        fails (and is retried on a fresh read) if it was not the latest.

        Returns:
            The object as written, or None when it is gone, was recreated (other
            ``uid``) or holds another spec version (other ``generation``).
        """
        for _ in range(attempts):
            if current is not None:
                obj, current = copy.deepcopy(current), None
            else:
                try:
                    obj = await self.get(res, namespace, name)
                except KubeError as exc:
                    if exc.code == 404:
                        return None
                    raise
            meta = obj["metadata"]
            if (uid is not None and meta["uid"] != uid) or (
                generation is not None and meta.get("generation") != generation
            ):
                return None
            before = copy.deepcopy(obj.get("status", {}))
            mutate(obj.setdefault("status", {}))
            if obj["status"] == before:
                return obj
            try:
                return await self.replace_status(res, obj)
            except KubeError as exc:
                if exc.code != 409:
                    raise
        raise RuntimeError(f"the status of {namespace}/{name} kept changing; gave up")

    async def set_status(
        self, res: Resource, namespace: str, name: str, uid: str, status: Obj
    ) -> Obj | None:
        """Write an object's whole status in one request, without reading it first: a JSON
        patch that first tests the uid (a deleted and recreated object is left alone).
        For objects whose status has one writer (the jobs of requests).

        Returns:
            The object as written; None when it is gone or was recreated.
        """
        ops = [
            {"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "add", "path": "/status", "value": status},
        ]
        try:
            return await self._call(
                "PATCH",
                res.path(namespace, name, "status"),
                json=ops,
                content_type="application/json-patch+json",
            )
        except KubeError as exc:
            if exc.code == 404:
                return None
            if exc.code == 422:  # the uid test failed, or the status is invalid: which?
                current = await self.find(res, namespace, name)
                if current is None or current["metadata"].get("uid") != uid:
                    return None
            raise

    async def replace_status(self, res: Resource, body: Obj) -> Obj:
        """PUT the status subresource; the body's resourceVersion makes it conditional (409)."""
        meta = body["metadata"]
        return await self._call(
            "PUT", res.path(meta.get("namespace"), meta["name"], "status"), json=body
        )
