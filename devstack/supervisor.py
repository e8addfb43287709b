"""Keeps the dev stack's processes running, as a kubelet keeps a pod's containers.

A process that exits is started again after a back-off that doubles from 1 s
to 30 s and falls back to 1 s once it has run for a minute (Kubernetes'
CrashLoopBackOff, shortened), and the console says so each time. The rest of
the stack and its data stay: one crashed component never ends the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
STABLE_AFTER_SECONDS = 60.0
"""A process that ran this long is healthy again: its next crash waits the first back-off."""


def backoff(restarts: int) -> float:
    """Seconds to wait before restart number ``restarts`` (from 0) of a crash loop."""
    return min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * (1 << min(restarts, 16)))


class Restartable(Protocol):
    """A process the supervisor can watch (``procs.Proc``)."""

    name: str
    log_path: Path

    def alive(self) -> bool: ...

    @property
    def returncode(self) -> int | None: ...

    def restart(self) -> None: ...


P = TypeVar("P", bound=Restartable)


@dataclass
class _Watched:
    proc: Restartable
    started: float
    restarts: int = 0
    """Restarts in the current crash loop (0 once the process has run a while)."""
    due: float | None = None
    """When the exited process is to be started again."""
    total: int = 0
    """Restarts since the stack started (what the console shows, as kubectl's RESTARTS)."""


class Supervisor:
    """Restarts the processes it watches. Call ``tick`` often, from one thread."""

    def __init__(
        self,
        say: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.say, self.clock = say, clock
        self._watched: dict[str, _Watched] = {}

    def watch(self, proc: P) -> P:
        """Keep ``proc`` running from now on."""
        self._watched[proc.name] = _Watched(proc, self.clock())
        return proc

    def forget(self, proc: Restartable) -> None:
        """Stop watching ``proc`` (before stopping it on purpose)."""
        self._watched.pop(proc.name, None)

    def restarts(self, name: str) -> int:
        """How many times the process named ``name`` was restarted."""
        watched = self._watched.get(name)
        return watched.total if watched else 0

    def tick(self) -> None:
        """Notice exits, and start again what is due."""
        now = self.clock()
        for w in list(self._watched.values()):
            if w.proc.alive():
                if w.restarts and now - w.started >= STABLE_AFTER_SECONDS:
                    w.restarts = 0
                continue
            if w.due is None:
                if now - w.started >= STABLE_AFTER_SECONDS:
                    w.restarts = 0
                wait = backoff(w.restarts)
                w.due = now + wait
                self.say(
                    f"{w.proc.name} exited ({_status(w.proc.returncode)}); restarting in "
                    f"{wait:g}s. Its log: {w.proc.log_path}"
                )
            elif now >= w.due:
                w.proc.restart()
                w.due, w.started = None, now
                w.restarts += 1
                w.total += 1
                self.say(f"{w.proc.name} restarted (restart {w.total})")


def _status(code: int | None) -> str:
    if code is None:
        return "status unknown"
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"
