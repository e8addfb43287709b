"""Assembles the FastAPI app: services, error envelope, routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from llmloom import __version__, tokens
from llmloom.api import chat, embeddings, errors, models, tasks
from llmloom.api.services import Services
from llmloom.settings import ApiSettings


def create_app(settings: ApiSettings) -> FastAPI:
    """The API application for one process."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tokens.prepare_offline_cache()
        app.state.services = await Services.start(settings)
        try:
            yield
        finally:
            await app.state.services.close()

    app = FastAPI(title="LLMLoom", version=__version__, lifespan=lifespan)
    errors.install(app)
    chat.attach_router(app)
    tasks.attach_router(app)
    models.attach_router(app)
    embeddings.attach_router(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
