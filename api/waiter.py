"""Waits for job results announced on Redis pub/sub.

One pattern subscription per API process receives every "done" announcement
and wakes the requests waiting on that job. A waiter registers before it
checks the stored result, so an announcement can never fall between the check
and the wait. If the subscription drops, it is re-established and every waiter
re-checks, so a missed announcement costs a round trip, not a hang.

Each announcement is also handed to ``on_done`` (settling the tokens of the
request behind it), whether or not anyone still waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from llmloom import results

log = logging.getLogger(__name__)


class ResultWaiter:
    """Lets many requests wait on job results over one subscription."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.on_done: Callable[[str, int], Awaitable[None]] | None = None
        """Called with the uid and version of every job version announced as finished."""
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._settling: Counter[tuple[str, int]] = Counter()
        """Job versions whose waiters here settle them with the outcome they read."""
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._callbacks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="llmloom-result-waiter")
        await asyncio.wait_for(self._subscribed.wait(), 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._callbacks:
            await asyncio.wait(self._callbacks, timeout=5)

    def _announced(self, uid: str, data: bytes | str) -> None:
        """Run ``on_done`` for an announcement, beside the listener (it talks to Redis),
        unless a request here waits for it (and settles it with the outcome it reads)."""
        if self.on_done is None:
            return
        try:
            version = int(json.loads(data)["version"])
        except (ValueError, KeyError, TypeError):
            return
        if (uid, version) in self._settling:
            return
        task = asyncio.create_task(self._call(self.on_done, uid, version))
        self._callbacks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._callbacks.discard)

    @staticmethod
    async def _call(fn: Callable[[str, int], Awaitable[None]], uid: str, version: int) -> None:
        try:
            await fn(uid, version)
        except Exception:
            log.exception("handling the end of job %s (version %d) failed", uid, version)

    def _wake(self, uid: str | None = None) -> None:
        groups = [self._waiters.get(uid, set())] if uid else list(self._waiters.values())
        for events in groups:
            for event in events:
                event.set()

    async def _listen(self) -> None:
        prefix = results.DONE_CHANNEL_PREFIX
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.psubscribe(prefix + "*")
                self._subscribed.set()
                self._wake()  # announcements may have been missed while unsubscribed
                async for msg in pubsub.listen():
                    if msg["type"] == "pmessage":
                        channel = msg["channel"]
                        channel = channel.decode() if isinstance(channel, bytes) else channel
                        self._wake(channel[len(prefix) :])
                        self._announced(channel[len(prefix) :], msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("result subscription lost (%s); resubscribing", exc)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def register(self, uid: str, version: int) -> asyncio.Event:
        """Be woken when job ``uid`` is announced from now on (``wait`` with the event); the
        caller settles the version's tokens with the outcome it reads."""
        event = asyncio.Event()
        self._waiters.setdefault(uid, set()).add(event)
        self._settling[(uid, version)] += 1
        return event

    def unregister(self, uid: str, version: int, event: asyncio.Event) -> None:
        events = self._waiters.get(uid)
        if events is not None:
            events.discard(event)
            if not events:
                del self._waiters[uid]
        self._settling[(uid, version)] -= 1
        if self._settling[(uid, version)] <= 0:
            del self._settling[(uid, version)]

    async def wait(
        self, uid: str, version: int, seconds: float, registered: asyncio.Event | None = None
    ) -> results.Outcome | None:
        """The outcome of a job version, waiting up to ``seconds``; None if not done.

        ``registered``: an event from ``register`` made before the job could finish (before
        it was queued): then the result is read only once announced, not looked for first.
        """
        event = registered or self.register(uid, version)
        look = registered is None
        deadline = time.monotonic() + seconds
        try:
            while True:
                if look or event.is_set():
                    event.clear()
                    outcome = await results.load(self.redis, uid, version)
                    if outcome is not None:
                        return outcome
                look = False
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                try:
                    async with asyncio.timeout(left):
                        await event.wait()
                except TimeoutError:
                    return await results.load(self.redis, uid, version)
        finally:
            self.unregister(uid, version, event)
