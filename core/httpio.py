"""What LLMLoom's HTTP clients share: the aiohttp session they are built on, timeouts
with httpx's meaning, answers read whole, and line streams of any length.

The worker makes several HTTP requests per job (the provider call, status
writes), dozens of jobs a second, in one process. aiohttp's client costs about
0.15 ms of CPU per request where httpx costs about 2 ms (measured on the test
machine, 16 requests in flight): with httpx the client alone held one worker
below 64 busy slots. So the clients on the hot path (``Kube``, the providers)
use aiohttp; tools and tests keep httpx.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

MAX_LINE_BYTES = 64 * 1024 * 1024
"""A line longer than this ends the stream with an error (a broken server, not data)."""


def session(
    max_connections: int, ssl_context: ssl.SSLContext | None = None
) -> aiohttp.ClientSession:
    """A pooled session; create it on the loop that will use it.

    The environment's proxy settings apply (as they did with httpx), and no
    total timeout is set: each request says how long it may wait.
    """
    connector = aiohttp.TCPConnector(
        limit=max_connections, ssl=ssl_context if ssl_context is not None else True
    )
    return aiohttp.ClientSession(
        connector=connector,
        # Trusting the environment makes aiohttp look for a proxy and read ~/.netrc in a
        # thread on every request (a tenth of a worker's CPU); only when one is set.
        trust_env=proxy_configured(),
        timeout=aiohttp.ClientTimeout(total=None),
        # Responses are read as bytes and parsed here, not by aiohttp's content checks.
        raise_for_status=False,
    )


def proxy_configured() -> bool:
    """Whether the environment names an HTTP(S) proxy."""
    names = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
    return any(os.environ.get(n) or os.environ.get(n.lower()) for n in names)


def timeout(seconds: float | None) -> aiohttp.ClientTimeout:
    """httpx's meaning of one number: connecting and each read may take ``seconds``
    (a stream may last longer, so long as it keeps sending)."""
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)


TIMEOUT_ERRORS = (TimeoutError, aiohttp.ServerTimeoutError)
"""What a request raises when its server is too slow (aiohttp's are TimeoutErrors too)."""
TRANSPORT_ERRORS = (aiohttp.ClientError, OSError)
"""What a request raises when the connection fails or the answer is cut short."""


@dataclass(frozen=True)
class Reply:
    """An HTTP answer read whole: what error classification and parsing need."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of_json(cls, status: int, value: Any, headers: Mapping[str, str] | None = None) -> Reply:
        """A reply with a JSON body (tests and adapters build these)."""
        return cls(status, json.dumps(value).encode(), headers or {})

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (ValueError when it is not)."""
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        """A header, by its name in any case."""
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)


async def read(resp: aiohttp.ClientResponse) -> Reply:
    """Read an aiohttp answer whole."""
    return Reply(resp.status, await resp.read(), resp.headers)


async def lines(resp: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The answer's non-empty lines as they arrive (server-sent events, NDJSON, watches).

    aiohttp's own line reader refuses lines over 128 KiB; a watch event carries a
    whole object, and a job's inline document can be far larger.
    """
    pending = bytearray()
    async for part in resp.content.iter_any():
        pending += part
        start = 0
        while (end := pending.find(b"\n", start)) >= 0:
            line = pending[start:end].strip()
            if line:
                yield line.decode("utf-8", errors="replace")
            start = end + 1
        del pending[:start]
        if len(pending) > MAX_LINE_BYTES:
            raise aiohttp.ClientPayloadError(f"a line longer than {MAX_LINE_BYTES} bytes")
    if pending.strip():
        yield pending.strip().decode("utf-8", errors="replace")
