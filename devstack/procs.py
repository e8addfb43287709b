"""Child processes with their logs in files, free ports, and polling with deadlines."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; raise with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the thing polled is still starting
            last = exc
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout:g}s waiting for {what}" + (f": {last!r}" if last else "")
    )


class Proc:
    """One child process whose output goes to a log file; it can be started again."""

    def __init__(
        self, name: str, cmd: Sequence[str], log_dir: Path, env: dict[str, str] | None = None
    ):
        self.name = name
        self.cmd = list(cmd)
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.popen = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the stack, not each child
        )

    def restart(self) -> None:
        """Start the same command again (after it exited), logging to the same file."""
        if self.alive():
            return
        if self._log.closed:
            self._log = self.log_path.open("ab")
        self.popen = self._spawn()

    @property
    def returncode(self) -> int | None:
        """The exit status once it exited (negative: the signal that ended it)."""
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> bool:
        """True while running; raises with the log's tail once the process exited."""
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail(40)}")
        return True

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        self._log.close()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)


class ServerProcess:
    """A Python module serving HTTP on a loopback port as a child process; ready once
    its ``/health`` answers 200. Subclasses name the module."""

    name = "server"
    module = ""

    def __init__(
        self, log_dir: Path, port: int | None = None, args: Sequence[str] = (), timeout: float = 60
    ) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", self.module, "--port", str(self.port), *args]
        self.proc = Proc(self.name, cmd, log_dir)

        def healthy() -> bool:
            self.proc.check_alive()
            return httpx.get(f"{self.base}/health", timeout=2).status_code == 200

        wait_for(healthy, timeout, f"the {self.name}")

    @property
    def url(self) -> str:
        """The OpenAI base URL of the server."""
        return f"{self.base}/v1"

    def stop(self) -> None:
        self.proc.stop()


def serve_asgi(app: Callable[[], Any], description: str | None) -> None:
    """``python -m <module> --port N``: serve an ASGI app on loopback until killed."""
    import argparse

    import uvicorn

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--port", type=int, required=True)
    uvicorn.run(app(), host="127.0.0.1", port=ap.parse_args().port, log_level="warning")


def peak_rss_mib(pid: int) -> float:
    """A running process's peak resident memory (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a running process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
