"""The OpenAI wire as LLMLoom reads it, whatever the endpoint.

LLMLoom forwards requests as clients send them and answers as model servers
answer; it reads only what it acts on: the text a request holds (to count its
tokens before it runs, and when a server does not count them), the usage an
answer reports, and an answer's text. One function per question, for the four
endpoints: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/responses``,
``/v1/embeddings``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import tiktoken

from llmloom.resources import Endpoint

CHAT: Endpoint = "/v1/chat/completions"
COMPLETIONS: Endpoint = "/v1/completions"
RESPONSES: Endpoint = "/v1/responses"
EMBEDDINGS: Endpoint = "/v1/embeddings"
ENDPOINTS: tuple[Endpoint, ...] = (CHAT, COMPLETIONS, RESPONSES, EMBEDDINGS)

PER_MESSAGE = 3
"""Tokens OpenAI counts around each chat message (and to prime the reply)."""


def path(endpoint: Endpoint) -> str:
    """The endpoint's path below a server's API base (``/v1`` is in the flavor's URL)."""
    return endpoint.removeprefix("/v1")


def _texts_of_content(content: Any) -> Iterator[str]:
    """The text of a message's content: a string, or the text of its parts (images and
    audio are counted by the server, once it answers)."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    yield text
                refusal = part.get("refusal")
                if isinstance(refusal, str):
                    yield refusal


def message_texts(messages: Any) -> list[str]:
    """Per message, the text it holds: content (or its text parts) and tool calls."""
    out: list[str] = []
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        text = "".join(_texts_of_content(message.get("content")))
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                text += str(function.get("name") or "") + str(function.get("arguments") or "")
        out.append(text)
    return out


def _responses_input_texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    out: list[str] = []
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, dict):
            continue
        text = "".join(_texts_of_content(item.get("content")))
        text += str(item.get("arguments") or "")
        output = item.get("output")
        text += output if isinstance(output, str) else "".join(_texts_of_content(output))
        out.append(text)
    return out


def _count(enc: tiktoken.Encoding, text: str) -> int:
    return len(enc.encode(text, disallowed_special=()))


def _count_input(enc: tiktoken.Encoding, value: Any) -> int:
    """A prompt or input: text, a list of texts, token ids, or lists of token ids."""
    if isinstance(value, str):
        return _count(enc, value)
    if isinstance(value, list):
        total = 0
        for item in value:
            if isinstance(item, int):
                total += 1
            elif isinstance(item, str):
                total += _count(enc, item)
            elif isinstance(item, list):
                total += sum(1 for i in item if isinstance(i, int))
        return total
    return 0


def _count_json(enc: tiktoken.Encoding, value: Any) -> int:
    return _count(enc, json.dumps(value, separators=(",", ":"))) if value else 0


def prompt_tokens(endpoint: Endpoint, body: dict[str, Any], enc: tiktoken.Encoding) -> int:
    """The tokens a request's prompt holds, counted as OpenAI counts them before it runs:
    messages (3 tokens around each), their text parts and tool calls, tool definitions;
    images and audio are left to the server's count."""
    if endpoint == CHAT:
        texts = message_texts(body.get("messages"))
        chat = sum(PER_MESSAGE + _count(enc, t) for t in texts) + PER_MESSAGE
        return chat + _count_json(enc, body.get("tools"))
    if endpoint == COMPLETIONS:
        return _count_input(enc, body.get("prompt")) + _count_input(enc, body.get("suffix"))
    if endpoint == RESPONSES:
        texts = _responses_input_texts(body.get("input"))
        instructions = body.get("instructions")
        if isinstance(instructions, str):
            texts.append(instructions)
        text = sum(PER_MESSAGE + _count(enc, t) for t in texts)
        return text + _count_json(enc, body.get("tools"))
    return _count_input(enc, body.get("input"))


def completion_limit(endpoint: Endpoint, body: dict[str, Any]) -> int | None:
    """The most tokens the request asks the model to write, if it says."""
    keys = {
        CHAT: ("max_completion_tokens", "max_tokens"),
        COMPLETIONS: ("max_tokens",),
        RESPONSES: ("max_output_tokens",),
    }.get(endpoint, ())
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def choices(body: dict[str, Any]) -> int:
    """How many answers a chat or completions request asks for (OpenAI's n)."""
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def reported_usage(response: dict[str, Any]) -> tuple[int, int] | None:
    """Prompt and completion tokens as the server counted them (chat and completions say
    prompt/completion, responses input/output), or None when it did not."""
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return None
    for prompt, completion in (
        ("prompt_tokens", "completion_tokens"),
        ("input_tokens", "output_tokens"),
    ):
        if usage.get(prompt) is not None:
            return int(usage.get(prompt) or 0), int(usage.get(completion) or 0)
    return None


def answer_text(endpoint: Endpoint, response: dict[str, Any]) -> str:
    """The text an answer holds (to count it when the server did not)."""
    if endpoint == CHAT:
        messages = [c.get("message") or {} for c in response.get("choices") or []]
        return "".join(message_texts(messages))
    if endpoint == COMPLETIONS:
        return "".join(str(c.get("text") or "") for c in response.get("choices") or [])
    if endpoint == RESPONSES:
        texts: list[str] = []
        for item in response.get("output") or []:
            if isinstance(item, dict):
                texts += _texts_of_content(item.get("content"))
                texts.append(str(item.get("arguments") or ""))
        return "".join(texts)
    return ""
