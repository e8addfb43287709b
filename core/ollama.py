"""The OpenAI wire in Ollama's native API, both ways (Ollama 0.12).

A chat request becomes an ``/api/chat`` body: messages with their text, images
(``images``, from data: URLs) and tool calls (arguments as objects), tool
answers (``tool_name``), tools as they are, sampling parameters in ``options``
(with Ollama's own: ``top_k``, ``min_p``, ``repeat_penalty``, ``num_ctx``, ...),
``response_format`` as ``format``, ``reasoning_effort`` as ``think``. The
answer comes back as an OpenAI chat completion (tool calls with ids,
``reasoning_content`` from Ollama's thinking) or as its chunks.

What Ollama cannot express raises ``Untranslatable`` naming the field: the API
answers 400 before a job is made, never dropping it silently. Fields that ask
nothing of the model (``user``, ``metadata``, ``store``, ``service_tier``) have
nothing to become and are left out.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

OPTION_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    # Ollama's own sampling options, as a server-specific field of the request
    # (the SDKs' extra_body); vLLM's name for the repeat penalty too.
    "top_k": "top_k",
    "min_p": "min_p",
    "typical_p": "typical_p",
    "repeat_penalty": "repeat_penalty",
    "repetition_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n",
    "num_ctx": "num_ctx",
    "num_keep": "num_keep",
}
"""Request fields that become Ollama options, and their names there."""
NOTHING_TO_SEND = frozenset(
    {"model", "stream", "stream_options", "user", "metadata", "store", "service_tier", "n"}
)
"""Fields that ask nothing of the model (``n`` is the worker's: one call per choice)."""
IMAGE_PREFIXES = tuple(
    f"data:{kind};base64," for kind in ("image/jpeg", "image/jpg", "image/png", "image/webp", "")
)


class Untranslatable(ValueError):
    """A request field Ollama's API has no way to say."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param, self.message = param, message


def _image(url: Any, where: str) -> str:
    if not isinstance(url, str):
        raise Untranslatable(where, f"{where} must be a URL")
    for prefix in IMAGE_PREFIXES:
        if url.startswith(prefix):
            return url[len(prefix) :]
    raise Untranslatable(
        where,
        "Ollama takes images inline: send the image as a data: URL "
        "(data:image/png;base64,...), not a link",
    )


def _arguments(raw: Any, where: str) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw or "{}")
    except (TypeError, ValueError):
        raise Untranslatable(where, f"{where} must be a JSON object, as text") from None
    if not isinstance(value, dict):
        raise Untranslatable(where, f"{where} must be a JSON object")
    return value


def _message(message: Any, i: int, names: dict[str, str]) -> dict[str, Any]:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise Untranslatable(where, f"{where} must be an object")
    role = str(message.get("role") or "")
    out: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": ""}
    content = message.get("content")
    if isinstance(content, str):
        out["content"] = content
    elif isinstance(content, list):
        texts, images = [], []
        for j, part in enumerate(content):
            at = f"{where}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append(str(part.get("text") or ""))
            elif kind == "image_url":
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, dict) else image
                images.append(_image(url, f"{at}.image_url.url"))
            else:
                raise Untranslatable(at, f"Ollama's chat takes text and images, not {kind!r} parts")
        out["content"] = "\n".join(texts)
        if images:
            out["images"] = images
    elif content is not None:
        raise Untranslatable(f"{where}.content", f"{where}.content must be text or parts")
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        out["thinking"] = reasoning
    calls = []
    for k, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise Untranslatable(f"{where}.tool_calls[{k}]", "a tool call names a function")
        args = _arguments(function.get("arguments"), f"{where}.tool_calls[{k}].function.arguments")
        calls.append({"function": {"name": function.get("name"), "arguments": args}})
        if call.get("id"):
            names[str(call["id"])] = str(function.get("name") or "")
    if calls:
        out["tool_calls"] = calls
    if role == "tool":
        name = message.get("name") or names.get(str(message.get("tool_call_id") or ""))
        if name:
            out["tool_name"] = name
    return out


def chat_request(body: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    """An OpenAI chat body as an Ollama ``/api/chat`` body."""
    names: dict[str, str] = {}
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise Untranslatable("messages", "messages must be a list")
    out: dict[str, Any] = {
        "model": model,
        "messages": [_message(m, i, names) for i, m in enumerate(messages)],
        "stream": stream,
    }
    options: dict[str, Any] = {}
    for key, value in body.items():
        if key in ("messages", *NOTHING_TO_SEND) or value is None:
            continue
        if key in OPTION_FIELDS:
            options[OPTION_FIELDS[key]] = value
        elif key == "max_completion_tokens" or (
            key == "max_tokens" and body.get("max_completion_tokens") is None
        ):
            options["num_predict"] = value  # max_completion_tokens wins, as at OpenAI
        elif key == "max_tokens":
            continue
        elif key == "stop":
            options["stop"] = [value] if isinstance(value, str) else value
        elif key == "tools":
            out["tools"] = value
        elif key == "tool_choice":
            if value not in ("auto", "none"):
                raise Untranslatable(
                    key, "Ollama lets the model choose its tools: tool_choice is auto or none"
                )
        elif key == "parallel_tool_calls":
            if value is not True:
                raise Untranslatable(key, "Ollama cannot be held to one tool call per answer")
        elif key == "response_format":
            _format(value, out)
        elif key == "reasoning_effort":
            out["think"] = False if value in ("none", "minimal") else value
        elif key == "modalities":
            if value != ["text"]:
                raise Untranslatable(key, "Ollama answers in text only")
        elif key == "keep_alive" or key == "think":
            out[key] = value  # Ollama's own fields, sent as they are
        elif key == "options" and isinstance(value, dict):
            options.update(value)
        else:
            raise Untranslatable(key, f"Ollama's chat API has no equivalent of '{key}'")
    if body.get("tool_choice") == "none":
        out.pop("tools", None)  # no tool may be called: the model is not shown any
    if options:
        out["options"] = options
    return out


def _format(value: Any, out: dict[str, Any]) -> None:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "json_object":
        out["format"] = "json"
    elif kind == "json_schema":
        schema = (value.get("json_schema") or {}).get("schema")
        out["format"] = schema if isinstance(schema, dict) else "json"
    elif kind != "text":
        raise Untranslatable(
            "response_format", "response_format.type is text, json_object or json_schema"
        )


def usage(data: dict[str, Any]) -> dict[str, int]:
    """Ollama's counts as OpenAI's usage."""
    prompt, completion = int(data.get("prompt_eval_count") or 0), int(data.get("eval_count") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _tool_calls(message: dict[str, Any], first: int = 0) -> list[dict[str, Any]]:
    """A message's tool calls in OpenAI's shape, numbered from ``first`` (a stream numbers
    its calls across its parts)."""
    calls = []
    for i, call in enumerate(message.get("tool_calls") or [], start=first):
        function = call.get("function") or {}
        calls.append(
            {
                "index": i,
                "id": f"call_{secrets.token_hex(12)}",
                "type": "function",
                "function": {
                    "name": function.get("name"),
                    "arguments": json.dumps(function.get("arguments") or {}),
                },
            }
        )
    return calls


def finish_reason(data: dict[str, Any], called: bool) -> str:
    if called:
        return "tool_calls"
    return "length" if data.get("done_reason") == "length" else "stop"


def chat_response(data: dict[str, Any], model: str) -> dict[str, Any]:
    """An Ollama ``/api/chat`` answer as an OpenAI chat completion."""
    message = data.get("message") or {}
    calls = _tool_calls(message)
    out_message: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    if calls:
        out_message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
        out_message["content"] = out_message["content"] or None
    if message.get("thinking"):
        out_message["reasoning_content"] = message["thinking"]
    return {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("model") or model,
        "choices": [
            {"index": 0, "message": out_message, "finish_reason": finish_reason(data, bool(calls))}
        ],
        "usage": usage(data),
    }


class ChunkMaker:
    """An Ollama stream's lines as OpenAI chat.completion.chunk objects."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id, self.created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())
        self.called = 0
        """Tool calls so far: the next one's index."""
        self.first = True

    def chunks(self, part: dict[str, Any]) -> list[dict[str, Any]]:
        message = part.get("message") or {}
        delta: dict[str, Any] = {}
        if self.first:
            delta["role"] = "assistant"
            self.first = False
        if message.get("content"):
            delta["content"] = message["content"]
        if message.get("thinking"):
            delta["reasoning_content"] = message["thinking"]
        calls = _tool_calls(message, first=self.called)
        if calls:
            self.called += len(calls)
            delta["tool_calls"] = calls
        done = bool(part.get("done"))
        finish = finish_reason(part, self.called > 0) if done else None
        base = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }
        out = []
        if delta or done:
            out.append({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        if done:
            out.append({**base, "choices": [], "usage": usage(part)})
        return out


def embed_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI embeddings body as an Ollama ``/api/embed`` body."""
    value = body.get("input")
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in items):
        raise Untranslatable("input", "Ollama embeds text: send strings, not token ids")
    out: dict[str, Any] = {"model": model, "input": value}
    for key, item in body.items():
        if key in ("input", "encoding_format", *NOTHING_TO_SEND) or item is None:
            continue
        if key in ("dimensions", "truncate", "keep_alive", "options"):
            out[key] = item
        else:
            raise Untranslatable(key, f"Ollama's embed API has no equivalent of '{key}'")
    return out


def embed_response(data: dict[str, Any], model: str) -> dict[str, Any]:
    """An Ollama ``/api/embed`` answer as an OpenAI embeddings list."""
    tokens = int(data.get("prompt_eval_count") or 0)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": v}
            for i, v in enumerate(data["embeddings"])
        ],
        "model": data.get("model") or model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
