"""Errors in the OpenAI envelope: ``{"error": {"message", "type", "param", "code"}}``.

Every failure a client can see goes through here, with the HTTP status an
OpenAI client expects; nothing escapes as a bare 500 page. Invalid requests are
400 (OpenAI's status), never FastAPI's 422, and the OpenAPI document says so:
routes declare their errors with ``responses(...)``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmloom import redisclients

log = logging.getLogger(__name__)


class APIError(Exception):
    """An error answered to the client in the OpenAI envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers


def envelope(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> dict[str, object]:
    """An error as OpenAI writes it: in a body, or in a server-sent event of a stream."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class ErrorDetail(BaseModel):
    """What went wrong, for a person (message) and for a program (type, code)."""

    message: str
    type: str
    param: str | None
    """The request field at fault, when one is."""
    code: str | None


class ErrorResponse(BaseModel):
    """Every error, in OpenAI's envelope."""

    error: ErrorDetail


_MEANINGS = {
    400: "Invalid request: malformed JSON, a wrong type, an unknown field, a bad value",
    401: "No API token, or one that is not valid",
    404: "No such model, task or job in the caller's tenant",
    409: "A job of that name exists",
    413: "The request body is over the size limit",
    429: "A rate limit was hit (code rate_limit_exceeded, with Retry-After) or the token "
    "budget is spent (code insufficient_quota)",
    502: "The model server failed the job (code: the reason)",
    503: "The model cannot serve requests now (no node can run it)",
    504: "The job did not finish within its deadline",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations of the errors a route answers with."""
    return {s: {"model": ErrorResponse, "description": _MEANINGS[s]} for s in statuses}


def _param_of(loc: tuple[int | str, ...], prefix: str) -> str:
    return ".".join([prefix, *(str(p) for p in loc)] if prefix else [str(p) for p in loc])


@contextlib.contextmanager
def invalid_as_400(prefix: str = "") -> Iterator[None]:
    """Turn a resource model's refusal of what the request carries into a 400 naming the
    field (``prefix`` places it in the request), instead of a 500."""
    try:
        yield
    except ValidationError as exc:
        first = exc.errors()[0]
        param = _param_of(tuple(first["loc"]), prefix) or None
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
        raise APIError(400, message, param=param, code="invalid_request") from exc


def _param(loc: tuple[int | str, ...]) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or None


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, APIError):  # registered for APIError only
        raise exc
    return JSONResponse(
        envelope(exc.message, exc.type, exc.param, exc.code), exc.status, headers=exc.headers
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):  # registered for it only
        raise exc
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    param = _param(tuple(first.get("loc", ())))
    message = f"{param}: {first['msg']}" if param else str(first["msg"])
    return JSONResponse(envelope(message, "invalid_request_error", param, "invalid_request"), 400)


def allowed_methods(app: Any, path: str) -> list[str]:
    """Every method some route of the app answers on a path (Starlette's own 405 names
    only the first route whose path matched)."""
    methods: set[str] = set()
    for route in app.routes:
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(path):
            methods |= set(route_methods)
    return sorted(methods)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):  # registered for it only
        raise exc
    kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
    return JSONResponse(envelope(str(exc.detail), kind), exc.status_code, headers=headers)


async def _redis_away(_: Request, exc: Exception) -> JSONResponse:
    """Redis is away (restarting, failing over): a fault that passes, which OpenAI's SDKs
    retry, not a 500."""
    log.warning("Redis is unavailable: %s", exc)
    body = envelope(
        "The service is briefly unavailable (its queue is restarting); please retry.",
        "server_error",
        code="service_unavailable",
    )
    return JSONResponse(body, 503, headers={"Retry-After": "1"})


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(envelope("internal error", "server_error"), 500)


def _error_reference(document: dict[str, Any]) -> dict[str, Any]:
    """The error envelope's schema in the document's components, as a reference."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    if "ErrorResponse" not in schemas:
        schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas["ErrorResponse"] = schema
    reference = {"$ref": "#/components/schemas/ErrorResponse"}
    return {"content": {"application/json": {"schema": reference}}}


def _document_errors(operation: dict[str, Any], error: dict[str, Any]) -> None:
    """What every route answers besides its own: 400 where FastAPI would say 422 (its
    validation errors are OpenAI's 400 here) or a body is read (it may be malformed), 413
    where a body is read, 401 where a token is needed, 404 where the path names an object."""
    answers = operation.setdefault("responses", {})
    parameters = operation.get("parameters", [])
    declared = {
        "400": answers.pop("422", None) is not None or "requestBody" in operation,
        "401": bool(operation.get("security")),
        "404": any(p.get("in") == "path" for p in parameters),
        "413": "requestBody" in operation,
    }
    for status, applies in declared.items():
        if applies:
            answers.setdefault(status, {"description": _MEANINGS[int(status)], **error})


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The app's OpenAPI document, with the errors every route answers declared."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            error = _error_reference(document)
            for path in document.get("paths", {}).values():
                for operation in path.values():
                    _document_errors(operation, error)
            schemas = document.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
        return app.openapi_schema or generate()

    return openapi


def install(app: FastAPI) -> None:
    """Answer every error of the app in the OpenAI envelope, and document it so."""
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for away in redisclients.UNAVAILABLE:
        app.add_exception_handler(away, _redis_away)
    app.add_exception_handler(Exception, _unexpected)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
