"""The job versions a worker process is running: kept alive, and told when to stop.

A worker may run dozens of jobs at once, so the per-job chores are shared: one
task writes the leases of every running version (taken, renewed, dropped) in
a single Redis round trip per batch of changes, and one watch per flavor on
the LLMJobs of that flavor only (``fieldSelector=spec.flavor=<name>``) tells
each running version at once when its job is deleted, edited, suspended or
ended elsewhere (by the operator at its deadline). A poll per job would cost
an API-server request per job every few seconds and notice a cancellation
only at the next poll; a watch of the whole namespace would bring every
worker every job of every flavor. A shared model's worker watches the model's
jobs in each tenant's namespace it has run a job of (its RoleBindings reach
those namespaces only).

The watch also keeps the latest object of each job of the worker's flavors
(as an informer's cache does), so starting a job usually needs no read: the
status writes carry its resourceVersion, and a stale copy only costs the
conflict and a fresh read. It remembers the jobs deleted lately too: a
request's job comes with its spec in its queue entry and is started without
a read, unless it was deleted (cancelled) before a worker took it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict

from llmloom import GROUP, VERSION, batches, conditions, queues
from llmloom.informer import Reflector
from llmloom.kube import LLMJOBS, Obj
from llmloom.queues import JobRef
from llmloom.worker.deps import SHARED_SUFFIX, Deps

log = logging.getLogger(__name__)
WATCH_RETRY_SECONDS = 1.0
LEASE_RETRY_SECONDS = 0.5
FLUSH_SECONDS = 5.0
REMEMBERED_DELETIONS = 10_000
"""How many deleted jobs a worker remembers (a job is deleted after it was queued)."""


def stop_reason(ref: JobRef, obj: Obj | None) -> str | None:
    """Why the running version ``ref`` must stop, given its job as it now is (None:
    deleted); None when it may go on. Reads the raw object: it runs for every watch
    event of every running job."""
    if obj is None:
        return "deleted"
    meta = obj.get("metadata", {})
    if meta.get("uid") != ref.uid or meta.get("generation") != ref.generation:
        return "superseded"
    if obj.get("spec", {}).get("suspend"):
        return "suspended"
    if conditions.finished((obj.get("status") or {}).get("conditions", []), ref.generation):
        return "ended-elsewhere"
    return None


class Inflight:
    """The running versions of one worker process; use on the worker's event loop."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._running: dict[str, tuple[JobRef, asyncio.Future[str]]] = {}
        self._watches: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._changes: list[tuple[JobRef, bool]] = []
        """Lease changes not yet written: (version, held), in the order made."""
        self._wake = asyncio.Event()
        self._written = asyncio.Event()
        self._writing = False
        self._shared: str | None = None
        """The shared model this worker serves (its queue ``name@*``), if it is one."""
        self._flavors: set[tuple[str, str]] = set()
        """(namespace, flavor) of the jobs watched."""
        for q in deps.settings.queues:
            if q.endswith(SHARED_SUFFIX):
                self._shared = q.removesuffix(SHARED_SUFFIX)
            else:
                ns, _, name = q.partition("/")
                self._flavors.add((ns, name))
        self._objects: dict[str, Obj] = {}
        self._deleted: OrderedDict[str, None] = OrderedDict()
        self._cancels: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Watch the jobs of the worker's flavors, and the cancellations of batches, from
        now on (on the loop)."""
        for key in self._flavors:
            self._ensure_watch(key)
        self._cancels = asyncio.create_task(self._listen_cancels())

    def deleted(self, uid: str) -> bool:
        """Whether the watch saw this job deleted (lately)."""
        return uid in self._deleted

    def latest(self, ref: JobRef) -> Obj | None:
        """The job as the watch last saw it, if that is the version ``ref`` names."""
        obj = self._objects.get(ref.uid)
        if obj is None or obj["metadata"].get("generation") != ref.generation:
            return None
        return obj

    def _remember(self, namespace: str, obj: Obj, deleted: bool = False) -> None:
        uid = obj.get("metadata", {}).get("uid")
        if deleted:
            self._deleted[uid] = None
            while len(self._deleted) > REMEMBERED_DELETIONS:
                self._deleted.popitem(last=False)
        if deleted or (namespace, obj.get("spec", {}).get("flavor")) not in self._flavors:
            self._objects.pop(uid, None)
        else:
            self._objects[uid] = obj

    def _ensure_watch(self, key: tuple[str, str]) -> None:
        watch = self._watches.get(key)
        if watch is None or watch.done():
            self._watches[key] = asyncio.create_task(self._watch(*key))

    def __len__(self) -> int:
        return len(self._running)

    async def enter(self, ref: JobRef) -> asyncio.Future[str]:
        """Take the lease of ``ref``; the future resolves with a reason if it must stop.

        The lease is written by the lease writer, with the other jobs' lease changes,
        without waiting for it: the operator gives a started attempt a grace period
        before it looks for the lease (``LEASE_GRACE_SECONDS``).
        """
        stop: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._running[ref.rq_id] = (ref, stop)
        self._lease_change(ref, True)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew())
        if self._shared is not None and ref.line is None:
            self._flavors.add((ref.namespace, self._shared))  # a tenant's first job here
        for key in self._flavors:
            if key[0] == ref.namespace:
                self._ensure_watch(key)  # started with the worker; alive again if it died
        return stop

    async def leave(self, ref: JobRef) -> None:
        """The version ended here (or was handed back): drop its lease."""
        self._running.pop(ref.rq_id, None)
        self._lease_change(ref, False)

    async def flush(self, seconds: float = FLUSH_SECONDS) -> None:
        """Return once every lease change made so far is in Redis, or ``seconds`` have
        passed (Redis is away: a stopping worker must not hang on it)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while self._changes or self._writing:
                    self._written.clear()
                    await self._written.wait()

    async def close(self) -> None:
        await self.flush()
        tasks = [
            t
            for t in (self._renewer, self._writer, self._cancels, *self._watches.values())
            if t is not None
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @property
    def _lease_ms(self) -> int:
        return int(self.deps.settings.lease_seconds * 1000)

    def _lease_change(self, ref: JobRef, held: bool) -> None:
        self._changes.append((ref, held))
        self._wake.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_leases())

    async def _write_leases(self) -> None:
        """Write the lease changes waiting, in order, in one round trip per batch: at
        dozens of jobs a second, a round trip per job would cost more CPU than the
        job's own Redis work."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            changes, self._changes = self._changes, []
            self._writing = True
            try:
                async with self.deps.redis.pipeline(transaction=False) as pipe:
                    for ref, held in changes:
                        if held:
                            pipe.set(queues.lease_key(ref), "1", px=self._lease_ms)
                        else:
                            pipe.delete(queues.lease_key(ref))
                    await pipe.execute()
            except Exception as exc:  # Redis hiccupped: try again, keeping the order
                log.warning("could not write leases: %s", exc)
                self._changes[:0] = changes
                await asyncio.sleep(LEASE_RETRY_SECONDS)
                self._wake.set()
            finally:
                self._writing = False
                self._written.set()

    async def _renew(self) -> None:
        """Renew every running version's lease, three times per lease lifetime."""
        while True:
            await asyncio.sleep(self.deps.settings.lease_seconds / 3)
            for ref, _ in list(self._running.values()):
                self._lease_change(ref, True)

    async def _listen_cancels(self) -> None:
        """Stop the lines in flight of a batch announced cancelled (or expired): one
        subscription per worker process."""
        while True:
            pubsub = self.deps.redis.pubsub()
            try:
                await pubsub.psubscribe(batches.CANCEL_PREFIX + "*")
                async for msg in pubsub.listen():
                    if msg["type"] != "pmessage":
                        continue
                    channel = msg["channel"]
                    channel = channel.decode() if isinstance(channel, bytes) else channel
                    uid = channel[len(batches.CANCEL_PREFIX) :]
                    for ref, stop in list(self._running.values()):
                        if ref.line is not None and ref.uid == uid and not stop.done():
                            stop.set_result("batch-cancelled")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("batch cancellations unheard (%s); subscribing again", exc)
                await asyncio.sleep(WATCH_RETRY_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _check(self, ref: JobRef, stop: asyncio.Future[str], obj: Obj | None) -> None:
        reason = stop_reason(ref, obj)
        if reason is not None and not stop.done():
            stop.set_result(reason)

    async def _watch(self, namespace: str, flavor: str) -> None:
        """Follow the LLMJobs of one flavor (a field selector on ``spec.flavor``)."""

        async def listed(items: list[Obj]) -> None:
            by_uid = {o["metadata"]["uid"]: o for o in items}
            gone = [
                uid
                for uid, o in self._objects.items()
                if o["metadata"]["namespace"] == namespace
                and o.get("spec", {}).get("flavor") == flavor
                and uid not in by_uid
            ]
            for uid in gone:
                self._objects.pop(uid)
            for obj in items:
                # Items of a list may lack these; a status write needs them.
                obj.setdefault("apiVersion", f"{GROUP}/{VERSION}")
                obj.setdefault("kind", "LLMJob")
                self._remember(namespace, obj)
            for ref, stop in list(self._running.values()):
                if ref.namespace == namespace and (ref.uid in by_uid or ref.uid in gone):
                    self._check(ref, stop, by_uid.get(ref.uid))

        async def changed(kind: str, obj: Obj) -> None:
            self._remember(namespace, obj, deleted=kind == "DELETED")
            uid = obj.get("metadata", {}).get("uid")
            for ref, stop in list(self._running.values()):
                if ref.uid == uid:
                    self._check(ref, stop, None if kind == "DELETED" else obj)

        selector = f"spec.flavor={flavor}"
        await Reflector(self.deps.kube, LLMJOBS, listed, changed, namespace, selector).run()
