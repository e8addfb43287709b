"""The lines of a batch's output and error files, in OpenAI's format: a request's
response (status 200), the status and error envelope the API would have answered,
or why the batch never ran it (cancelled, expired). Workers write the lines of the
requests they ran, the operator those of the requests that never ran."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from llmloom import embeddings
from llmloom.batches import Line, LineError, Prepared
from llmloom.results import Outcome


def request_line_id(seed: str) -> str:
    """An output line's ``id`` (``batch_req_`` and 32 hex digits), stable for one request."""
    return "batch_req_" + hashlib.sha256(seed.encode()).hexdigest()[:32]


def _line(seed: str, custom_id: str, response: Any, error: Any) -> str:
    item = {"id": request_line_id(seed), "custom_id": custom_id, "response": response}
    return json.dumps({**item, "error": error}, separators=(",", ":"))


def response_line(request: Prepared, request_id: str, uid: str, outcome: Outcome) -> Line:
    """The line of a request that ran (``request_id``): its response with status 200
    (output file), or the status and error envelope the API would have answered (error
    file)."""
    if outcome.ok and outcome.response is not None:
        body = embeddings.encoded(outcome.response, request.encoding_format)
        usage = outcome.usage or {}
        return Line(
            ok=True,
            text=_line(
                f"{uid}:{request.line}",
                request.custom_id,
                {"status_code": 200, "request_id": request_id, "body": body},
                None,
            ),
            prompt_tokens=int(usage.get("promptTokens") or 0),
            completion_tokens=int(usage.get("completionTokens") or 0),
        )
    e = outcome.error
    err = (
        LineError(status_code=e.status_code, message=e.message, type=e.type, code=e.reason)
        if e is not None
        else LineError(status_code=500, message="the request failed", type="server_error")
    )
    response = {"status_code": err.status_code, "request_id": request_id, "body": err.body()}
    return Line(ok=False, text=_line(f"{uid}:{request.line}", request.custom_id, response, None))


def error_line(batch_uid: str, request: Prepared) -> Line:
    """The error-file line of a request refused before it ran (unknown model, invalid body):
    the status and envelope the API would have answered it with."""
    err = request.error or LineError(status_code=400, message="invalid request")
    response = {"status_code": err.status_code, "request_id": None, "body": err.body()}
    return Line(
        ok=False, text=_line(f"{batch_uid}:{request.line}", request.custom_id, response, None)
    )


UNEXECUTED = {
    "cancelled": ("batch_cancelled", "This request was not run because the batch was cancelled."),
    "expired": (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
}


def unexecuted_line(
    batch_uid: str, request: Prepared, why: Literal["cancelled", "expired"]
) -> Line:
    """The error-file line of a request the batch ended before it finished."""
    code, message = UNEXECUTED[why]
    return Line(
        ok=False,
        text=_line(
            f"{batch_uid}:{request.line}",
            request.custom_id,
            None,
            {"code": code, "message": message},
        ),
    )


def jsonl(lines: list[str]) -> bytes:
    """A JSONL file of these lines."""
    return "".join(f"{line}\n" for line in lines).encode()
