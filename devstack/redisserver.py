"""A throwaway redis-server (Debian's package) on a free loopback port."""

from __future__ import annotations

import shutil
from pathlib import Path

from redis import Redis

from devstack.procs import Proc, free_port, wait_for


class RedisServer:
    """redis-server on loopback, its files in ``workdir``; ``persist`` keeps its data in
    an append-only file there, so that a restarted server has it again (the dev stack)."""

    def __init__(self, workdir: Path, persist: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: `apt-get install redis-server` (make deps does it)"
            )
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = Proc(
            "redis",
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if persist else "no",
                "--dir",
                str(workdir),
                "--protected-mode",
                "yes",
            ],
            workdir,
        )
        client = Redis.from_url(self.url)
        try:
            wait_for(lambda: self.proc.check_alive() and client.ping(), 20, "redis-server")
        finally:
            client.close()

    def stop(self) -> None:
        self.proc.stop()
