"""Waits for job results announced on Redis pub/sub.

One pattern subscription per API process receives every "done" announcement
and wakes the requests waiting on that job. A waiter registers before it
checks the stored result, so an announcement can never fall between the check
and the wait. If the subscription drops, it is re-established and every waiter
re-checks, so a missed announcement costs a round trip, not a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.asyncio import Redis

from llmloom import results

log = logging.getLogger(__name__)


class ResultWaiter:
    """Lets many requests wait on job results over one subscription."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="llmloom-result-waiter")
        await asyncio.wait_for(self._subscribed.wait(), 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

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
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("result subscription lost (%s); resubscribing", exc)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def wait(self, uid: str, version: int, seconds: float) -> results.Outcome | None:
        """The outcome of a job version, waiting up to ``seconds``; None if not done."""
        event = asyncio.Event()
        self._waiters.setdefault(uid, set()).add(event)
        deadline = time.monotonic() + seconds
        try:
            while True:
                outcome = await results.load(self.redis, uid, version)
                left = deadline - time.monotonic()
                if outcome is not None or left <= 0:
                    return outcome
                event.clear()
                try:
                    await asyncio.wait_for(event.wait(), left)
                except TimeoutError:
                    return await results.load(self.redis, uid, version)
        finally:
            events = self._waiters.get(uid)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiters[uid]
