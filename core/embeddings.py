"""Embedding vectors as OpenAI answers them: floats, or base64 of little-endian float32
(``encoding_format``), for the API's answers and a batch's output lines alike."""

from __future__ import annotations

import base64
import struct
from typing import Any, Literal

EncodingFormat = Literal["float", "base64"]


def as_base64(vector: list[float]) -> str:
    """A vector as OpenAI's base64 encoding: little-endian float32."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def encoded(response: dict[str, Any], encoding_format: str) -> dict[str, Any]:
    """An embeddings answer in the encoding the request asked for (answers are stored
    with float vectors)."""
    if encoding_format != "base64" or "data" not in response:
        return response
    data = [
        {**d, "embedding": as_base64(e) if isinstance(e := d["embedding"], list) else e}
        for d in response["data"]
    ]
    return {**response, "data": data}
