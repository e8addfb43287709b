"""Line streams (watches, server-sent events, NDJSON) come through whole, however the
bytes are cut, and however long a line is."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest

from llmloom import httpio


class Content:
    """An answer's body arriving in the given pieces."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def iter_any(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


class Answer:
    def __init__(self, pieces: list[bytes]) -> None:
        self.content = Content(pieces)


def read_lines(pieces: list[bytes]) -> list[str]:
    async def run() -> list[str]:
        answer = cast(aiohttp.ClientResponse, Answer(pieces))
        return [line async for line in httpio.lines(answer)]

    return asyncio.run(run())


def test_lines_cut_anywhere_come_out_whole_and_blank_ones_are_dropped() -> None:
    body = b'data: {"a": 1}\n\ndata: {"b": 2}\r\n\n{"c": 3}'
    whole = read_lines([body])
    assert whole == ['data: {"a": 1}', 'data: {"b": 2}', '{"c": 3}']
    for cut in range(1, len(body)):
        assert read_lines([body[:cut], body[cut:]]) == whole
    assert read_lines([bytes([b]) for b in body]) == whole


def test_a_watch_event_larger_than_aiohttps_line_limit_is_read() -> None:
    """A job with a large inline document is one watch line of megabytes."""
    event: dict[str, Any] = {"type": "MODIFIED", "object": {"spec": {"text": "x" * 3_000_000}}}
    data = json.dumps(event).encode() + b"\n"
    pieces = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    assert [json.loads(line) for line in read_lines(pieces)] == [event]


def test_a_line_without_end_is_refused_past_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httpio, "MAX_LINE_BYTES", 1000)
    with pytest.raises(aiohttp.ClientPayloadError, match="longer than 1000 bytes"):
        read_lines([b"y" * 600, b"y" * 600])


def test_a_reply_is_read_as_text_json_and_headers_in_any_case() -> None:
    reply = httpio.Reply.of_json(429, {"error": "slow"}, {"Retry-After": "3"})
    assert reply.json() == {"error": "slow"} and reply.header("retry-after") == "3"
    assert httpio.Reply(502, b"\xffbad").text == "\ufffdbad"
    with pytest.raises(ValueError):
        httpio.Reply(502, b"<html>").json()
