"""Watch caches of one kind of object, as client-go's reflectors and informers keep.

``Reflector``: a list, then a watch from its resourceVersion; when the server
ends a watch (every few minutes) it resumes from the last version seen (an
event's or a bookmark's), and lists again only on a 410 Gone or a broken
connection: a collection of thousands of objects is not listed every few
minutes. ``Informer`` keeps what a reflector sees in memory: the API resolves
a request's model in a dict lookup instead of a GET per request (and a list
for a model id). Indexes (by model id, say) are kept beside the objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from llmloom.kube import Kube, Obj, Resource

log = logging.getLogger(__name__)
RETRY_SECONDS = 1.0
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class Reflector:
    """Lists and watches one resource (in one namespace, or all; the objects a field
    selector picks, or all), handing what it sees to
    ``on_list`` (every object, after each list) and ``on_event`` (each change: ADDED,
    MODIFIED, DELETED with the object)."""

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        on_list: Callable[[list[Obj]], Awaitable[None]],
        on_event: Callable[[str, Obj], Awaitable[None]],
        namespace: str | None = None,
        field_selector: str | None = None,
    ) -> None:
        self.kube, self.resource, self.namespace = kube, resource, namespace
        self.field_selector = field_selector
        self.on_list, self.on_event = on_list, on_event
        self.synced = asyncio.Event()
        """Set once the first list is in."""

    async def run(self) -> None:
        """List and watch until cancelled."""
        version: str | None = None
        while True:
            try:
                if version is None:
                    items, version = await self.kube.list_with_version(
                        self.resource, self.namespace, self.field_selector
                    )
                    await self.on_list(items)
                    self.synced.set()
                version = await self._watch(version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watch of %s broke: %s; listing again", self.resource.plural, exc)
                version = None
                await asyncio.sleep(RETRY_SECONDS)

    async def _watch(self, version: str) -> str | None:
        """One watch from ``version``: the version to resume from when the server ends it,
        or None when it is too old (410 Gone: list again)."""
        async for event in self.kube.watch(
            self.resource, self.namespace, version, field_selector=self.field_selector
        ):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                return None
            seen = (obj.get("metadata") or {}).get("resourceVersion")
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                await self.on_event(kind, obj)
            if seen:
                version = str(seen)
        return version


class Informer(Generic[T]):
    """Objects of one resource, parsed with ``parse``, kept current."""

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        parse: Callable[[Obj], T],
        indexes: dict[str, Callable[[T], Hashable | None]] | None = None,
        namespace: str | None = None,
    ) -> None:
        """
        Args:
            namespace: the one namespace to watch; None watches all.
            parse: turns an object into what readers get (a model, say).
            indexes: name -> key function; ``by(name, key)`` finds the objects with that
                key (a key of None is not indexed).
        """
        self.kube, self.resource, self.parse = kube, resource, parse
        self.index_keys = indexes or {}
        self.objects: dict[tuple[str, str], T] = {}
        self._indexes: dict[str, dict[Hashable, set[tuple[str, str]]]] = {
            name: {} for name in self.index_keys
        }
        self.reflector = Reflector(kube, resource, self._listed, self._changed, namespace)
        self.synced = self.reflector.synced
        """Set once the first list is in."""
        self._task: asyncio.Task[None] | None = None
        self.on_change: Callable[[str, T | None], None] | None = None
        """Told of each change the watch brings (ADDED, MODIFIED with the object as parsed,
        DELETED with None), after the cache holds it."""

    def start(self) -> None:
        self._task = asyncio.create_task(
            self.reflector.run(), name=f"informer-{self.resource.plural}"
        )

    async def wait_synced(self, seconds: float) -> None:
        await asyncio.wait_for(self.synced.wait(), seconds)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def get(self, namespace: str, name: str) -> T | None:
        return self.objects.get((namespace, name))

    def by(self, index: str, key: Hashable) -> list[T]:
        """The objects whose ``index`` key is ``key``, by name."""
        return [self.objects[k] for k in sorted(self._indexes[index].get(key, ()))]

    def in_namespace(self, namespace: str) -> list[T]:
        return [v for (ns, _), v in sorted(self.objects.items()) if ns == namespace]

    def _put(self, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        self._drop(key)
        try:
            value = self.parse(obj)
        except Exception as exc:  # an object an older or newer component wrote: skip it
            log.warning("skipping %s %s/%s: %s", self.resource.plural, *key, exc)
            return
        self.objects[key] = value
        for name, fn in self.index_keys.items():
            index_key = fn(value)
            if index_key is not None:
                self._indexes[name].setdefault(index_key, set()).add(key)

    def _drop(self, key: tuple[str, str]) -> None:
        old = self.objects.pop(key, None)
        if old is None:
            return
        for name, fn in self.index_keys.items():
            keys = self._indexes[name].get(fn(old))
            if keys is not None:
                keys.discard(key)

    async def _listed(self, items: list[Obj]) -> None:
        self.objects.clear()
        for index in self._indexes.values():
            index.clear()
        for obj in items:
            self._put(obj)

    async def _changed(self, kind: str, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        if kind == "DELETED":
            self._drop(key)
        else:
            self._put(obj)
        if self.on_change is not None:
            self.on_change(kind, self.objects.get(key))
