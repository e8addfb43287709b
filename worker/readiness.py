"""Waiting for the model server beside the worker before taking jobs.

In a self-hosted flavor's pod the worker starts next to a model server that
may need minutes to load weights (vLLM) or has yet to download the model
(Ollama). Jobs stay in the queue until the server answers; for Ollama the
worker pulls the flavor's model first.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp

from llmloom import httpio

log = logging.getLogger(__name__)


def health_url(provider: str, endpoint: str) -> str:
    """The URL that answers 200 once the server can serve."""
    base = endpoint.rstrip("/")
    if provider == "ollama":
        return base + "/api/tags"
    return base.removesuffix("/v1") + "/health"


async def _ollama_has(http: aiohttp.ClientSession, endpoint: str, model: str) -> bool:
    async with http.get(endpoint.rstrip("/") + "/api/tags", timeout=httpio.timeout(10)) as resp:
        tags = (await httpio.read(resp)).json()
    names = {m.get("name", "") for m in tags.get("models", [])}
    return model in names or f"{model}:latest" in names


async def wait_for_model(
    http: aiohttp.ClientSession, provider: str, endpoint: str, model: str, deadline_seconds: float
) -> None:
    """Return once the server answers (and, for Ollama, holds the model); raise on timeout."""
    url = health_url(provider, endpoint)
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            async with http.get(url, timeout=httpio.timeout(5)) as resp:
                if resp.status == 200:
                    break
        except (*httpio.TIMEOUT_ERRORS, *httpio.TRANSPORT_ERRORS):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the model server at {url} did not answer in {deadline_seconds:g}s")
        await asyncio.sleep(1)
    if provider == "ollama" and not await _ollama_has(http, endpoint, model):
        log.info("pulling %s into the Ollama server", model)
        left = max(1.0, deadline - time.monotonic())
        async with http.post(
            endpoint.rstrip("/") + "/api/pull",
            json={"model": model, "stream": False},
            timeout=httpio.timeout(left),
        ) as resp:
            pulled = await httpio.read(resp)
        if pulled.status >= 400 or not await _ollama_has(http, endpoint, model):
            raise RuntimeError(f"Ollama could not pull {model}: {pulled.text[:300]}")
    log.info("model server at %s is ready", endpoint)
