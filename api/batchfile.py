"""A batch's input file, checked as OpenAI checks it before a batch starts: JSON lines,
each an object with a unique ``custom_id``, ``method`` POST, ``url`` the batch's
endpoint and a ``body`` object."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llmloom.resources import BatchError

MAX_REQUESTS = 50_000
"""Requests one input file may hold, as OpenAI allows."""
MAX_ERRORS = 100
"""Validation errors reported for one input file (the status holds them)."""


@dataclass(frozen=True)
class InputLine:
    """One request of an input file that passed the file's checks."""

    line: int
    """Line of the file, from 1."""
    custom_id: str
    body: dict[str, Any]


@dataclass
class ParsedInput:
    """An input file's requests, or why the file is refused."""

    requests: list[InputLine] = field(default_factory=list)
    errors: list[BatchError] = field(default_factory=list)


def parse_input(data: bytes, endpoint: str, max_requests: int = MAX_REQUESTS) -> ParsedInput:
    """Check an input file as OpenAI does before a batch starts: JSON lines, each an object
    with a unique ``custom_id``, ``method`` POST, ``url`` the batch's endpoint and a
    ``body`` object. Any error refuses the whole file (OpenAI's status failed)."""
    out = ParsedInput()

    def error(code: str, message: str, line: int | None = None, param: str | None = None) -> None:
        if len(out.errors) < MAX_ERRORS:
            out.errors.append(BatchError(code=code, message=message, line=line, param=param))

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        error("invalid_file_format", f"The input file is not UTF-8 text (byte {exc.start}).")
        return out
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue  # blank lines (a trailing newline) carry no request
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            error("invalid_json_line", f"Line {number} is not valid JSON: {exc.msg}.", number)
            continue
        if not isinstance(obj, dict):
            error("invalid_json_line", f"Line {number} is not a JSON object.", number)
            continue
        custom_id, method, url, body = (obj.get(k) for k in ("custom_id", "method", "url", "body"))
        if not isinstance(custom_id, str) or not custom_id:
            error(
                "missing_required_parameter",
                f"Line {number} has no custom_id (a non-empty string).",
                number,
                "custom_id",
            )
            continue
        if custom_id in seen:
            error(
                "duplicate_custom_id",
                f"The custom_id '{custom_id}' on line {number} is already used on line "
                f"{seen[custom_id]}; each request of a batch needs its own.",
                number,
                "custom_id",
            )
            continue
        seen[custom_id] = number
        if method != "POST":
            error("invalid_method", f"Line {number}: method must be POST.", number, "method")
        elif url != endpoint:
            error(
                "invalid_url",
                f"Line {number}: url {json.dumps(url)} does not match the batch's endpoint "
                f"{endpoint}.",
                number,
                "url",
            )
        elif not isinstance(body, dict):
            error("invalid_body", f"Line {number}: body must be a JSON object.", number, "body")
        else:
            out.requests.append(InputLine(line=number, custom_id=custom_id, body=body))
    if not out.errors and not out.requests:
        error("empty_file", "The input file holds no requests.")
    if len(seen) > max_requests:
        error(
            "too_many_tasks",
            f"The input file holds {len(seen)} requests; a batch takes at most {max_requests}.",
        )
    if out.errors:
        out.requests = []
    return out
