"""A controller's work queue: keys poked by watch events are handled at once, and
every known key again each resync period (as client-go's informers resync).

The flavor and batch controllers share it; each says how to list every key
and how to handle one. Use it on the operator's event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")


class WorkQueue(Generic[K]):
    """Keys waiting to be handled, and the loop that handles them."""

    def __init__(
        self,
        period: float,
        every_key: Callable[[], Awaitable[set[K]]],
        handle: Callable[[K], Awaitable[None]],
        resync_first: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        Args:
            period: seconds between two resyncs (every key handled again).
            every_key: the keys a resync handles.
            handle: handles one key; it must not raise (it logs and counts its errors).
            resync_first: resync at once when the loop starts, rather than a period later.
        """
        self.period, self.every_key, self.handle, self.clock = period, every_key, handle, clock
        self._resync_first = resync_first
        self._dirty: set[K] = set()
        self._wake = asyncio.Event()

    def poke(self, key: K) -> None:
        """Handle this key soon."""
        self._dirty.add(key)
        self._wake.set()

    async def next_batch(self, next_full: float) -> tuple[set[K], float]:
        """Wait for a poke or the resync; the keys to handle and when the next resync is."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, next_full - self.clock()))
        self._wake.clear()
        keys, self._dirty = self._dirty, set()
        if self.clock() >= next_full:
            next_full = self.clock() + self.period
            keys |= await self.every_key()
        return keys, next_full

    async def run(self) -> None:
        """Handle keys until cancelled, concurrently within one batch."""
        next_full = self.clock() + (0.0 if self._resync_first else self.period)
        while True:
            keys, next_full = await self.next_batch(next_full)
            await asyncio.gather(*(self.handle(key) for key in keys))
