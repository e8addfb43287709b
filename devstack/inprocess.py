"""The operator in a thread of the test process, as the integration tier runs it.

In-process, a test can stop and start it again (a crash and a new pod) and
read its controllers' state; the dev stack runs it as a process of its own.
"""

from __future__ import annotations

import asyncio
import threading

from llmloom.operator.runner import operate
from llmloom.settings import OperatorSettings


class OperatorThread:
    """The operator in a background thread."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self._fresh()

    def _fresh(self) -> None:
        self.ready = threading.Event()
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._main, name="llmloom-operator", daemon=True)

    def _main(self) -> None:
        asyncio.run(operate(self.settings, ready_flag=self.ready, stop_flag=self.stop_flag))

    def start(self, timeout: float = 30.0) -> OperatorThread:
        self.thread.start()
        if not self.ready.wait(timeout):
            raise RuntimeError("the operator did not become ready")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_flag.set()
        self.thread.join(timeout)

    def restart(self) -> None:
        """Stop and start again, as a crash and a new pod would (state in memory is lost)."""
        self.stop()
        self._fresh()
        self.start()
