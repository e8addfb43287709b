"""OpenAI's Responses API, stateless, over chat completions: for model servers that do
not serve ``/v1/responses`` themselves (Ollama 0.12).

OpenAI's and vLLM's servers (and llama.cpp's) serve ``/v1/responses``, and
LLMLoom forwards it to them as it is. For the others, the request becomes a
chat completion and its answer a Response, streamed or not: ``input`` (text,
messages with text and image parts, function calls and their outputs),
``instructions``, function ``tools`` and ``tool_choice``, ``text.format``,
``max_output_tokens``, ``temperature``, ``top_p``, ``reasoning.effort``. What
needs state kept by the server (``previous_response_id``, ``conversation``,
``background``) or tools the server runs itself (web or file search) cannot be
had this way and raises ``Unsupported`` naming the field (the API answers 400).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any


class Unsupported(ValueError):
    """A Responses request field that chat completions cannot carry."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param, self.message = param, message


PASSED = ("temperature", "top_p", "parallel_tool_calls", "user", "stream")
IGNORED = frozenset({"model", "store", "metadata", "service_tier", "stream_options"})
"""Fields that ask nothing of the model (nothing is stored: stateless)."""
EMPTY_OK = frozenset({"include", "tools"})
"""Fields whose empty value asks nothing (the Agents SDK sends ``include=[]``)."""


def _part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": str(part.get("text") or "")}
    if kind == "input_image" and part.get("image_url"):
        image = {"url": part["image_url"]}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise Unsupported(where, f"{where}: {kind!r} parts need the server's own Responses API")


def _messages(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise Unsupported("input", "input is text or a list of items")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise Unsupported(where, f"{where} must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            content = item.get("content")
            if isinstance(content, list):
                content = [_part(p, f"{where}.content[{j}]") for j, p in enumerate(content)]
            out.append({"role": item.get("role", "user"), "content": content})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
            }
            if out and out[-1]["role"] == "assistant" and out[-1].get("tool_calls"):
                out[-1]["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else json.dumps(output)
            out.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
        else:
            raise Unsupported(where, f"{where}: {kind!r} items need the server's own Responses API")
    return out


def _tools(value: Any) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(value if isinstance(value, list) else []):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else tool
            raise Unsupported(f"tools[{i}]", f"{kind!r} tools run on OpenAI's servers only")
        function = {
            k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool
        }
        out.append({"type": "function", "function": function})
    return out


def _format(value: Any) -> dict[str, Any] | None:
    form = value.get("format") if isinstance(value, dict) else None
    kind = form.get("type") if isinstance(form, dict) else None
    if form is None or kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {k: form[k] for k in ("name", "schema", "strict", "description") if k in form}
        return {"type": "json_schema", "json_schema": schema}
    raise Unsupported("text.format", "text.format.type is text, json_object or json_schema")


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A Responses request as a chat completions body."""
    messages = _messages(body.get("input"))
    if isinstance(body.get("instructions"), str):
        messages.insert(0, {"role": "system", "content": body["instructions"]})
    chat: dict[str, Any] = {"messages": messages}
    for key, value in body.items():
        if key in ("input", "instructions", *IGNORED) or value is None:
            continue
        if key in EMPTY_OK and not value:
            continue
        if key in PASSED:
            chat[key] = value
        elif key == "max_output_tokens":
            chat["max_tokens"] = value
        elif key == "tools":
            if value:
                chat["tools"] = _tools(value)
        elif key == "tool_choice":
            chat["tool_choice"] = (
                {"type": "function", "function": {"name": value.get("name")}}
                if isinstance(value, dict)
                else value
            )
        elif key == "text":
            form = _format(value)
            if form is not None:
                chat["response_format"] = form
        elif key == "reasoning":
            effort = value.get("effort") if isinstance(value, dict) else None
            if effort:
                chat["reasoning_effort"] = effort
        else:
            raise Unsupported(
                key, f"'{key}' needs the server's own Responses API (kept state or tools)"
            )
    return chat


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def _usage(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not chat_usage:
        return None
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    completion = int(chat_usage.get("completion_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def _shell(body: dict[str, Any], model: str, status: str) -> dict[str, Any]:
    """A Response with no output yet, echoing the request's settings as OpenAI does."""
    form = (body.get("text") or {}).get("format") or {"type": "text"}
    return {
        "id": _new_id("resp"),
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": [],
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "text": {"format": form},
        "store": False,
        "usage": None,
    }


def _message_item(text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "message",
        "id": _new_id("msg"),
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _call_item(call: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "type": "function_call",
        "id": _new_id("fc"),
        "call_id": call.get("id") or _new_id("call"),
        "name": function.get("name"),
        "arguments": function.get("arguments") or "",
        "status": status,
    }


def _finish(response: dict[str, Any], finish: str | None) -> None:
    if finish == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    else:
        response["status"] = "completed"


def from_chat(completion: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """A chat completion as the Response the request asked for."""
    response = _shell(body, completion.get("model") or "", "completed")
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    if message.get("content"):
        response["output"].append(_message_item(str(message["content"])))
    for call in message.get("tool_calls") or []:
        response["output"].append(_call_item(call))
    _finish(response, choice.get("finish_reason"))
    response["usage"] = _usage(completion.get("usage"))
    return response


class EventStream:
    """Chat completion chunks as the events of a streamed Response."""

    def __init__(self, body: dict[str, Any], model: str) -> None:
        self.response = _shell(body, model, "in_progress")
        self.sequence = 0
        self.text: dict[str, Any] | None = None
        """The message item being written, if any."""
        self.calls: dict[int, dict[str, Any]] = {}
        """Function call items being written, by the chunks' tool call index."""
        self.finish: str | None = None

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def start(self) -> list[dict[str, Any]]:
        snapshot = {**self.response, "output": []}
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def _added(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        self.response["output"].append(item)
        index = len(self.response["output"]) - 1
        return [self._event("response.output_item.added", output_index=index, item=item)]

    def chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """The events one chat chunk makes."""
        out: list[dict[str, Any]] = []
        if chunk.get("usage"):
            self.response["usage"] = _usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self.text is None:
                    self.text = _message_item("", "in_progress")
                    out += self._added(self.text)
                    out.append(
                        self._event(
                            "response.content_part.added",
                            item_id=self.text["id"],
                            output_index=len(self.response["output"]) - 1,
                            content_index=0,
                            part={"type": "output_text", "text": "", "annotations": []},
                        )
                    )
                self.text["content"][0]["text"] += delta["content"]
                out.append(
                    self._event(
                        "response.output_text.delta",
                        item_id=self.text["id"],
                        output_index=self.response["output"].index(self.text),
                        content_index=0,
                        delta=delta["content"],
                        logprobs=[],
                    )
                )
            for call in delta.get("tool_calls") or []:
                index = int(call.get("index") or 0)
                function = call.get("function") or {}
                item = self.calls.get(index)
                if item is None:
                    item = self.calls[index] = _call_item(
                        {"id": call.get("id"), "function": {"name": function.get("name")}},
                        "in_progress",
                    )
                    out += self._added(item)
                if function.get("arguments"):
                    item["arguments"] += function["arguments"]
                    out.append(
                        self._event(
                            "response.function_call_arguments.delta",
                            item_id=item["id"],
                            output_index=self.response["output"].index(item),
                            delta=function["arguments"],
                        )
                    )
            self.finish = choice.get("finish_reason") or self.finish
        return out

    def end(self) -> list[dict[str, Any]]:
        """The closing events, ending with ``response.completed`` (or ``incomplete``)."""
        out: list[dict[str, Any]] = []
        for index, item in enumerate(self.response["output"]):
            item["status"] = "completed"
            if item["type"] == "message":
                text = item["content"][0]["text"]
                fields = {"item_id": item["id"], "output_index": index, "content_index": 0}
                out.append(
                    self._event("response.output_text.done", **fields, text=text, logprobs=[])
                )
                out.append(
                    self._event("response.content_part.done", **fields, part=item["content"][0])
                )
            else:
                out.append(
                    self._event(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=index,
                        arguments=item["arguments"],
                    )
                )
            out.append(self._event("response.output_item.done", output_index=index, item=item))
        _finish(self.response, self.finish)
        kind = "response.incomplete" if self.response["status"] == "incomplete" else None
        out.append(self._event(kind or "response.completed", response=self.response))
        return out
