"""Assembles the FastAPI app: services, error envelope, observability, routers."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import start_http_server

from llmloom import __version__, tokens
from llmloom.api import (
    batches,
    chat,
    completions,
    embeddings,
    errors,
    files,
    health,
    jobs,
    models,
    observability,
    responses,
    serving,
    tasks,
)
from llmloom.api.observability import ApiMetrics
from llmloom.api.services import Services
from llmloom.settings import ApiSettings


def create_app(settings: ApiSettings) -> FastAPI:
    """The API application for one process."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tokens.prepare_offline_cache()
        services = app.state.services = await Services.start(settings, metrics)
        services.waiter.on_done = functools.partial(serving.settle, services)
        # Metrics on a port of their own: the client-facing Service and Ingress never
        # publish tenants' names and token counts.
        server = (
            start_http_server(settings.metrics_port, settings.metrics_host, metrics.registry)[0]
            if settings.metrics_port
            else None
        )
        try:
            yield
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()
            await app.state.services.close()

    metrics = ApiMetrics()
    app = FastAPI(title="LLMLoom", version=__version__, lifespan=lifespan)
    errors.install(app)
    observability.install(app, metrics, settings.max_body_bytes)
    for module in (
        health,
        chat,
        completions,
        responses,
        embeddings,
        models,
        tasks,
        jobs,
        files,
        batches,
    ):
        module.attach_router(app)
    return app
