"""/v1/files: the OpenAI Files API, for batch input and output files.

Uploads are ``multipart/form-data`` (``file`` and ``purpose``) as the OpenAI
SDKs send them, parsed with the standard library's MIME parser: bodies are
bounded by the API's body limit anyway, and one parser less is one dependency
less. Files live in Redis per tenant (``llmloom.files``): another tenant's id
answers 404, as a missing one does.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import Response

from llmloom import files
from llmloom.api.deps import ServicesDep, TenantDep
from llmloom.api.errors import APIError

router = APIRouter()
UPLOAD_PURPOSES = ("batch",)
MIN_EXPIRY_SECONDS, MAX_EXPIRY_SECONDS = 3600, 30 * 24 * 3600
"""Bounds of ``expires_after[seconds]``, as OpenAI's."""


@dataclass(frozen=True)
class FormPart:
    """One field of a multipart form."""

    data: bytes
    filename: str | None = None


def parse_form(content_type: str, body: bytes) -> dict[str, FormPart]:
    """The fields of a ``multipart/form-data`` body, by name (the first of each name)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise APIError(
            400, "Upload files as multipart/form-data (fields file and purpose).", param="file"
        )
    unreadable = APIError(400, "The multipart body could not be read.", param="file")
    head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    fields: dict[str, FormPart] = {}
    try:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        if not message.is_multipart():
            raise unreadable
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str) or name in fields:
                continue
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            fields[name] = FormPart(data=data, filename=part.get_filename())
    except APIError:
        raise
    except Exception as exc:  # the MIME parser trips on some malformed headers (IndexError)
        raise unreadable from exc
    return fields


def _text(fields: dict[str, FormPart], name: str) -> str | None:
    part = fields.get(name)
    return None if part is None else part.data.decode("utf-8", "replace").strip()


def expiry(fields: dict[str, FormPart], default: int) -> int:
    """Seconds the file lives: ``expires_after[seconds]`` (anchor ``created_at``) or the
    default."""
    anchor, seconds = (
        _text(fields, "expires_after[anchor]"),
        _text(fields, "expires_after[seconds]"),
    )
    if anchor not in (None, "created_at"):
        raise APIError(400, "expires_after.anchor must be created_at", param="expires_after.anchor")
    if seconds is None:
        return default
    if not seconds.isdigit() or not MIN_EXPIRY_SECONDS <= int(seconds) <= MAX_EXPIRY_SECONDS:
        raise APIError(
            400,
            f"expires_after.seconds must be between {MIN_EXPIRY_SECONDS} and {MAX_EXPIRY_SECONDS}",
            param="expires_after.seconds",
        )
    return int(seconds)


def _not_found(file_id: str) -> APIError:
    return APIError(404, f"No such File object: {file_id}", param="file_id", code="file_not_found")


UPLOAD_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": list(UPLOAD_PURPOSES)},
                        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
                        "expires_after[seconds]": {
                            "type": "integer",
                            "minimum": MIN_EXPIRY_SECONDS,
                            "maximum": MAX_EXPIRY_SECONDS,
                        },
                    },
                }
            }
        },
    }
}
"""The upload form in the OpenAPI document (the route reads the body itself)."""


@router.post("/v1/files", openapi_extra=UPLOAD_FORM)
async def upload_file(request: Request, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """Upload a file (purpose ``batch``: a batch's input, JSONL)."""
    body = await request.body()
    limit = services.settings.max_body_bytes
    if len(body) > limit:  # a chunked upload has no Content-Length for the middleware to check
        raise APIError(
            413,
            f"request body of {len(body)} bytes is over the limit of {limit}",
            code="request_too_large",
        )
    fields = await asyncio.to_thread(parse_form, request.headers.get("content-type", ""), body)
    upload = fields.get("file")
    if upload is None or upload.filename is None:
        raise APIError(400, "The form needs a field 'file' holding the file.", param="file")
    purpose = _text(fields, "purpose")
    if purpose is None:
        raise APIError(400, "The form needs a field 'purpose'.", param="purpose")
    if purpose not in UPLOAD_PURPOSES:
        raise APIError(
            400,
            f"LLMLoom keeps files for the Batch API only: purpose must be 'batch', not "
            f"'{purpose}'.",
            param="purpose",
            code="unsupported_purpose",
        )
    ttl = expiry(fields, services.settings.file_ttl_seconds)
    obj = await files.create(services.redis, tenant, upload.data, upload.filename, purpose, ttl)
    return obj.model_dump()


@router.get("/v1/files")
async def list_files(
    services: ServicesDep,
    tenant: TenantDep,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    """The tenant's files, newest first unless ``order=asc``."""
    page = await files.list_files(services.redis, tenant, purpose, after, limit, order)
    data = [f.model_dump() for f in page.data]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": page.has_more,
    }


@router.get("/v1/files/{file_id}")
async def get_file(file_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    found = await files.get(services.redis, tenant, file_id)
    if found is None:
        raise _not_found(file_id)
    return found.model_dump()


@router.get("/v1/files/{file_id}/content")
async def get_file_content(file_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """The file's bytes, as uploaded or as the batch wrote them."""
    data = await files.content(services.redis, tenant, file_id)
    if data is None:
        raise _not_found(file_id)
    return Response(data, media_type="application/octet-stream")


@router.delete("/v1/files/{file_id}")
async def delete_file(file_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """Delete a file (a batch that already started keeps its requests)."""
    if not await files.delete(services.redis, tenant, file_id):
        raise _not_found(file_id)
    return {"id": file_id, "object": "file", "deleted": True}


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
