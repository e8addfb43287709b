"""Batches without a cluster: the input file's checks, each line prepared as the same
request would be (its body and flavor, or its error), the output and error lines, the
state a batch keeps in Redis (over a stand-in), the operator's window and status, and
the OpenAI Batch object."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import lupa.lua51
import pytest
from redis.asyncio import Redis

from llmloom import batches, batchlines, files
from llmloom.api import batchfile
from llmloom.api.batches import BatchRequest, batch_object, check_request, prepare_line
from llmloom.api.batchfile import InputLine
from llmloom.api.errors import APIError
from llmloom.api.files import parse_form
from llmloom.batches import Line, LineError, Prepared, PreparedHeader
from llmloom.kube import is_name
from llmloom.operator.batches import (
    Window,
    lost_line,
    mark_ended,
    mark_failed,
    mark_progress,
    mark_started,
    stopping,
    window,
)
from llmloom.queues import JobRef
from llmloom.resources import Endpoint, Flavor, RequestCounts, Usage
from llmloom.results import ErrorInfo, Outcome
from llmloom.worker.batchlines import line_job

CHAT: Endpoint = "/v1/chat/completions"
COMPLETIONS: Endpoint = "/v1/completions"
RESPONSES: Endpoint = "/v1/responses"
EMBEDDINGS: Endpoint = "/v1/embeddings"


def line(custom_id: str, content: str = "hi", url: str = CHAT, **body: Any) -> str:
    req = {"model": "echo", "messages": [{"role": "user", "content": content}], **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": req})


def jsonl(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


# --------------------------------------------------------------------------- input file


def test_a_good_file_gives_its_requests_in_order() -> None:
    parsed = batchfile.parse_input(jsonl(line("a"), "", line("b", "yo")), CHAT)
    assert parsed.errors == []
    assert [(r.line, r.custom_id) for r in parsed.requests] == [(1, "a"), (3, "b")]
    assert parsed.requests[1].body["messages"][0]["content"] == "yo"


def test_a_line_that_is_not_json_refuses_the_file_and_names_the_line() -> None:
    parsed = batchfile.parse_input(jsonl(line("a"), "{not json", line("c")), CHAT)
    assert parsed.requests == []
    [err] = parsed.errors
    assert (err.code, err.line) == ("invalid_json_line", 2)
    assert "Line 2 is not valid JSON" in err.message


@pytest.mark.parametrize(
    ("bad", "code", "param"),
    [
        (line("a"), "duplicate_custom_id", "custom_id"),
        (line("b", url="/v1/embeddings"), "invalid_url", "url"),
        (
            json.dumps({"custom_id": "b", "method": "GET", "url": CHAT, "body": {}}),
            "invalid_method",
            "method",
        ),
        (
            json.dumps({"custom_id": "b", "method": "POST", "url": CHAT, "body": []}),
            "invalid_body",
            "body",
        ),
        (
            json.dumps({"method": "POST", "url": CHAT, "body": {}}),
            "missing_required_parameter",
            "custom_id",
        ),
        ("[1, 2]", "invalid_json_line", None),
    ],
)
def test_each_malformed_line_is_reported(bad: str, code: str, param: str | None) -> None:
    parsed = batchfile.parse_input(jsonl(line("a"), bad), CHAT)
    assert [(e.code, e.line, e.param) for e in parsed.errors] == [(code, 2, param)]


def test_empty_binary_and_oversized_files_are_refused() -> None:
    assert batchfile.parse_input(b"\n\n", CHAT).errors[0].code == "empty_file"
    assert batchfile.parse_input(b"\xff\xfe\x00", CHAT).errors[0].code == "invalid_file_format"
    many = batchfile.parse_input(jsonl(line("a"), line("b"), line("c")), CHAT, max_requests=2)
    assert many.errors[0].code == "too_many_tasks" and "at most 2" in many.errors[0].message


@pytest.mark.parametrize("endpoint", batches.ENDPOINTS)
def test_a_file_is_read_for_each_endpoint_a_batch_runs(endpoint: Endpoint) -> None:
    raw = json.dumps({"custom_id": "x", "method": "POST", "url": endpoint, "body": {"model": "m"}})
    parsed = batchfile.parse_input(jsonl(raw), endpoint)
    assert parsed.errors == [] and [r.body for r in parsed.requests] == [{"model": "m"}]


# --------------------------------------------------------------------------- names and ids


def test_batch_ids_map_to_kubernetes_names_and_back() -> None:
    name = batches.new_name()
    assert name.startswith("batch-") and len(name) == 30
    bid = batches.batch_id(name)
    assert bid.startswith("batch_") and batches.batch_name(bid) == name
    assert batches.batch_id("nightly") == "nightly" == batches.batch_name("nightly")
    # Ids that cannot name an LLMBatch are never sent to the API server (they answer 404).
    assert is_name(name, batches.MAX_NAME_LENGTH)
    assert not any(is_name(n, batches.MAX_NAME_LENGTH) for n in ["..", "Batch-A", "a_b", ""])


def test_a_batch_runs_four_endpoints_in_the_low_band() -> None:
    assert batches.ENDPOINTS == (CHAT, COMPLETIONS, RESPONSES, EMBEDDINGS)
    assert batches.PRIORITY < 0  # behind every interactive request of the flavor
    # A request's id in the output file is its batch's name and its 0-based position.
    assert batches.request_id("batch-ab", 7) == "batch-ab-7"
    assert batches.cancel_channel("u1") != batches.cancel_channel("u2")
    assert batches.cancel_channel("u1").endswith("u1")


def test_output_file_ids_are_fixed_per_batch_and_kind() -> None:
    out = batches.output_file_id("u", "output")
    assert out == batches.output_file_id("u", "output")  # a second finalization finds it
    assert out.startswith("file-") and len(out) == len("file-") + 24
    assert out != batches.output_file_id("u", "error")
    assert out != batches.output_file_id("v", "output")


@pytest.mark.parametrize("endpoint", batches.ENDPOINTS)
def test_a_batch_request_names_its_endpoint(endpoint: Endpoint) -> None:
    request = BatchRequest(input_file_id="f", endpoint=endpoint, completion_window="24h")
    assert check_request(request) == endpoint


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"endpoint": "/v1/images/generations"}, "endpoint"),
        ({"completion_window": "1h"}, "completion_window"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
    ],
)
def test_a_batch_request_is_refused_before_a_batch_exists(
    fields: dict[str, Any], param: str
) -> None:
    request = BatchRequest.model_validate(
        {"input_file_id": "f", "endpoint": CHAT, "completion_window": "24h", **fields}
    )
    with pytest.raises(APIError) as err:
        check_request(request)
    assert (err.value.status, err.value.param) == (400, param)


# --------------------------------------------------------------------------- preparing


def flavor(
    name: str,
    model: str = "echo",
    capabilities: list[str] | None = None,
    provider: str = "openai",
) -> Flavor:
    return Flavor.model_validate(
        {
            "metadata": {"name": name, "namespace": "t"},
            "spec": {
                "provider": provider,
                "model": model,
                "endpoint": "http://x/v1",
                "capabilities": capabilities or ["chat"],
            },
        }
    )


BODIES: dict[Endpoint, dict[str, Any]] = {
    CHAT: {
        "model": "echo",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 5,
        "stop": "\n",
        "temperature": 0,
        "seed": None,
        "x_server_option": {"keep": [1, "two", None]},
    },
    COMPLETIONS: {"model": "echo", "prompt": ["a", "b"], "max_tokens": 0, "echo": True},
    RESPONSES: {
        "model": "echo",
        "input": [{"role": "user", "content": "hi"}],
        "instructions": "Be brief.",
        "max_output_tokens": 16,
    },
    EMBEDDINGS: {"model": "echo", "input": ["a", "b"], "dimensions": 8},
}
"""A good body per endpoint, with fields LLMLoom does not name (forwarded as written)."""


def capable(endpoint: Endpoint) -> Flavor:
    return flavor("echo-flavor", capabilities=["embeddings" if endpoint == EMBEDDINGS else "chat"])


@pytest.mark.parametrize("endpoint", batches.ENDPOINTS)
def test_a_good_line_keeps_the_clients_body_and_resolves_its_flavor(endpoint: Endpoint) -> None:
    body = json.loads(json.dumps(BODIES[endpoint]))
    got = prepare_line(InputLine(4, "a", body), endpoint, {"echo": capable(endpoint)})
    assert got.error is None
    assert (got.line, got.custom_id, got.flavor) == (4, "a", "echo-flavor")
    assert got.body == BODIES[endpoint]  # nothing added, dropped or normalized
    assert got.encoding_format == "float"
    # What Redis holds of it reads back the same (nulls inside the body included).
    stored = Prepared.model_validate_json(got.model_dump_json(exclude_none=True))
    assert stored == got and stored.body == BODIES[endpoint]


def test_an_embeddings_line_keeps_its_base64_encoding() -> None:
    body = {"model": "minilm", "input": "a", "encoding_format": "base64"}
    resolved: dict[str, Flavor | APIError] = {"minilm": flavor("m", "minilm", ["embeddings"])}
    got = prepare_line(InputLine(1, "e", body), EMBEDDINGS, resolved)
    assert got.error is None and got.flavor == "m"
    assert got.encoding_format == "base64" and got.body == body


@pytest.mark.parametrize("endpoint", batches.ENDPOINTS)
def test_an_unknown_model_fails_its_line_as_the_request_would(endpoint: Endpoint) -> None:
    missing = APIError(
        404, "The model 'nope' does not exist", param="model", code="model_not_found"
    )
    body = {**BODIES[endpoint], "model": "nope"}
    got = prepare_line(InputLine(1, "a", body), endpoint, {"nope": missing})
    assert got.body is None and got.flavor is None and got.error is not None
    assert (got.error.status_code, got.error.code, got.error.param) == (
        404,
        "model_not_found",
        "model",
    )
    assert got.error.message == "The model 'nope' does not exist"
    assert got.error.type == "invalid_request_error"


@pytest.mark.parametrize(
    ("endpoint", "capabilities", "words"),
    [
        (CHAT, ["embeddings"], "support chat"),
        (COMPLETIONS, ["embeddings"], "support chat"),
        (RESPONSES, ["embeddings"], "support chat"),
        (EMBEDDINGS, ["chat"], "do embeddings"),
    ],
)
def test_a_model_without_the_capability_is_not_supported(
    endpoint: Endpoint, capabilities: list[str], words: str
) -> None:
    resolved: dict[str, Flavor | APIError] = {"echo": flavor("f", capabilities=capabilities)}
    got = prepare_line(InputLine(1, "a", BODIES[endpoint]), endpoint, resolved)
    assert got.body is None and got.error is not None
    assert (got.error.status_code, got.error.code, got.error.param) == (
        400,
        "model_not_supported",
        "model",
    )
    assert got.error.message == f"The model 'echo' does not {words}."


@pytest.mark.parametrize("endpoint", [CHAT, COMPLETIONS, RESPONSES])
def test_a_streamed_line_is_refused(endpoint: Endpoint) -> None:
    body = {**BODIES[endpoint], "stream": True}
    got = prepare_line(InputLine(3, "c", body), endpoint, {"echo": capable(endpoint)})
    assert got.body is None and got.error is not None
    assert (got.error.status_code, got.error.param) == (400, "stream")


@pytest.mark.parametrize(
    ("endpoint", "body", "param"),
    [
        (CHAT, {"model": "echo", "messages": []}, "messages"),
        (CHAT, {**BODIES[CHAT], "temperature": 3}, "temperature"),
        (COMPLETIONS, {"model": "echo"}, "prompt"),
        (COMPLETIONS, {**BODIES[COMPLETIONS], "n": 0}, "n"),
        (RESPONSES, {"model": "echo", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        (EMBEDDINGS, {"model": "echo", "input": "a", "dimensions": 0}, "dimensions"),
        (EMBEDDINGS, {"model": "echo", "input": "a", "encoding_format": "hex"}, "encoding_format"),
        (EMBEDDINGS, {"input": "a"}, "model"),
    ],
)
def test_an_invalid_body_fails_its_line_with_the_field_named(
    endpoint: Endpoint, body: dict[str, Any], param: str
) -> None:
    got = prepare_line(InputLine(2, "b", body), endpoint, {"echo": capable(endpoint)})
    assert got.body is None and got.flavor is None and got.error is not None
    assert (got.error.status_code, got.error.param) == (400, param)
    assert got.error.code == "invalid_request" and got.error.message.startswith(f"{param}: ")
    assert (got.line, got.custom_id) == (2, "b")


def test_an_ollama_flavor_refuses_what_it_cannot_take() -> None:
    ollama: dict[str, Flavor | APIError] = {"echo": flavor("local", provider="ollama")}
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    plain = prepare_line(InputLine(1, "a", body), CHAT, ollama)
    assert plain.error is None and plain.flavor == "local" and plain.body == body
    for param, value in (("modalities", ["text", "audio"]), ("x_server_option", 1)):
        extra = {**body, param: value}
        got = prepare_line(InputLine(2, "b", extra), CHAT, ollama)
        assert got.body is None and got.error is not None
        assert (got.error.status_code, got.error.code, got.error.param) == (
            400,
            "unsupported_parameter",
            param,
        )
        # The same body on an OpenAI-wire flavor is forwarded as it is.
        remote = prepare_line(InputLine(2, "b", extra), CHAT, {"echo": flavor("r")})
        assert remote.error is None and remote.body == extra


def test_the_example_batch_file_is_accepted() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "batch" / "requests.jsonl"
    parsed = batchfile.parse_input(path.read_bytes(), CHAT)
    assert parsed.errors == [] and len(parsed.requests) == 3
    resolved: dict[str, Flavor | APIError] = {"smollm2": flavor("smollm2", "smollm2")}
    prepared = [prepare_line(r, CHAT, resolved) for r in parsed.requests]
    assert [p.error for p in prepared] == [None, None, None]
    assert [p.body for p in prepared] == [r.body for r in parsed.requests]
    assert {p.flavor for p in prepared} == {"smollm2"}


def test_a_line_runs_as_a_low_priority_call_of_its_flavor() -> None:
    ref = JobRef(namespace="t", name="batch-ab", uid="u1", generation=1, line=7)
    chat = line_job(ref, 7, Prepared(line=8, custom_id="a", flavor="f", body={}), CHAT)
    assert chat.metadata.name == batches.request_id("batch-ab", 7)
    assert (chat.metadata.namespace, chat.spec.flavor) == ("t", "f")
    assert chat.spec.task == "chat" and chat.spec.priority == batches.PRIORITY
    embed = line_job(ref, 7, Prepared(line=8, custom_id="a", flavor="f", body={}), EMBEDDINGS)
    assert embed.spec.task == "embeddings"


# --------------------------------------------------------------------------- output lines

REQUEST = Prepared(line=1, custom_id="req-1", flavor="echo", body={"model": "echo"})


def test_a_request_that_succeeded_writes_openais_output_line() -> None:
    answer = {"id": "chatcmpl-1", "choices": [{"message": {"content": "hello"}}]}
    outcome = Outcome(ok=True, response=answer, usage={"promptTokens": 3, "completionTokens": 2})
    out = batchlines.response_line(REQUEST, "batch-x-0", "uid-1", outcome)
    item = json.loads(out.text)
    assert out.ok and (out.prompt_tokens, out.completion_tokens) == (3, 2)
    assert list(item) == ["id", "custom_id", "response", "error"]
    assert item["id"] == batchlines.request_line_id("uid-1:1")
    assert item["custom_id"] == "req-1"
    assert item["response"] == {"status_code": 200, "request_id": "batch-x-0", "body": answer}
    assert item["error"] is None
    # A provider that reports no usage counts no tokens.
    bare = batchlines.response_line(REQUEST, "j", "u", Outcome(ok=True, response=answer))
    assert bare.ok and (bare.prompt_tokens, bare.completion_tokens) == (0, 0)


def test_a_failed_request_writes_the_status_and_envelope_the_api_would_answer() -> None:
    err = ErrorInfo(reason="ProviderUnauthorized", message="bad key", status_code=502)
    out = batchlines.response_line(REQUEST, "batch-x-1", "u", Outcome(ok=False, error=err))
    item = json.loads(out.text)
    assert not out.ok and (out.prompt_tokens, out.completion_tokens) == (0, 0)
    assert item["error"] is None and item["custom_id"] == "req-1"
    assert item["response"] == {
        "status_code": 502,
        "request_id": "batch-x-1",
        "body": {
            "error": {
                "message": "bad key",
                "type": "upstream_error",
                "param": None,
                "code": "ProviderUnauthorized",
            }
        },
    }
    # An outcome that says neither answer nor error is a server error, not a success.
    empty = json.loads(batchlines.response_line(REQUEST, "j", "u", Outcome(ok=True)).text)
    assert empty["response"]["status_code"] == 500
    assert empty["response"]["body"]["error"]["type"] == "server_error"


def test_base64_embeddings_are_packed_as_openai_does() -> None:
    request = REQUEST.model_copy(update={"encoding_format": "base64"})
    answer = {"object": "list", "data": [{"index": 0, "embedding": [0.5, -1.0]}]}
    out = batchlines.response_line(request, "j", "u", Outcome(ok=True, response=answer))
    packed = json.loads(out.text)["response"]["body"]["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(packed)) == (0.5, -1.0)
    floats = batchlines.response_line(REQUEST, "j", "u", Outcome(ok=True, response=answer))
    assert json.loads(floats.text)["response"]["body"] == answer


def test_a_request_refused_before_it_ran_goes_to_the_error_file() -> None:
    refused = REQUEST.model_copy(
        update={
            "flavor": None,
            "body": None,
            "error": LineError(
                status_code=404, message="no model", param="model", code="model_not_found"
            ),
        }
    )
    out = batchlines.error_line("buid", refused)
    item = json.loads(out.text)
    assert not out.ok and item["custom_id"] == "req-1" and item["error"] is None
    assert item["response"] == {
        "status_code": 404,
        "request_id": None,  # it never ran
        "body": {
            "error": {
                "message": "no model",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        },
    }
    # A line with neither a body nor an error still has a line of its own.
    plain = json.loads(batchlines.error_line("buid", Prepared(line=2, custom_id="x")).text)
    assert plain["response"]["status_code"] == 400


def test_requests_the_batch_ended_before_they_ran_say_why() -> None:
    cancelled = batchlines.unexecuted_line("buid", REQUEST, "cancelled")
    item = json.loads(cancelled.text)
    assert not cancelled.ok and item["response"] is None and item["custom_id"] == "req-1"
    assert item["error"]["code"] == "batch_cancelled" and "cancelled" in item["error"]["message"]
    expired = json.loads(batchlines.unexecuted_line("buid", REQUEST, "expired").text)
    assert expired["error"]["code"] == "batch_expired" and expired["response"] is None


def test_line_ids_are_stable_per_batch_and_request() -> None:
    def line_id(uid: str, request: Prepared) -> str:
        return str(json.loads(batchlines.unexecuted_line(uid, request, "expired").text)["id"])

    first = line_id("buid", REQUEST)
    assert first.startswith("batch_req_") and len(first) == len("batch_req_") + 32
    # A file written again after a crash is the same file: every kind of line of the
    # same request has the same id.
    ok = batchlines.response_line(REQUEST, "j", "buid", Outcome(ok=True, response={}))
    assert json.loads(ok.text)["id"] == first
    assert json.loads(batchlines.error_line("buid", REQUEST).text)["id"] == first
    assert line_id("buid", REQUEST) == first
    assert line_id("other", REQUEST) != first
    assert line_id("buid", REQUEST.model_copy(update={"line": 2})) != first


def test_a_file_of_lines_is_jsonl() -> None:
    assert batchlines.jsonl(['{"a":1}', '{"b":2}']) == b'{"a":1}\n{"b":2}\n'
    assert batchlines.jsonl([]) == b""


# --------------------------------------------------------------------------- Redis state


class FakeRedis:
    """What ``llmloom.batches`` uses of Redis (strings, lists, hashes, pipelines, EVAL of
    its Lua script, PUBLISH), replying with bytes as redis-py does."""

    def __init__(self) -> None:
        self.strings: dict[str, bytes] = {}
        self.lists: dict[str, list[bytes]] = {}
        self.hashes: dict[str, dict[str, bytes]] = {}
        self.ttls: dict[str, int] = {}
        self.published: list[tuple[str, str]] = []
        self.lua = lupa.lua51.LuaRuntime()

    @staticmethod
    def _b(value: Any) -> bytes:
        return value if isinstance(value, bytes) else str(value).encode()

    def keys(self) -> set[str]:
        return {*self.strings, *self.lists, *self.hashes}

    # Commands, shared by the client, its pipelines and the Lua script.

    def _hincrby(self, key: str, field: str, amount: Any) -> int:
        h = self.hashes.setdefault(key, {})
        value = int(h.get(field, b"0")) + int(float(amount))
        h[field] = self._b(value)
        return value

    def _hsetnx(self, key: str, field: str, value: Any) -> int:
        h = self.hashes.setdefault(key, {})
        if field in h:
            return 0
        h[field] = self._b(value)
        return 1

    def _expire(self, key: str, seconds: Any) -> int:
        if key not in self.keys():
            return 0
        self.ttls[key] = int(seconds)
        return 1

    async def delete(self, *keys: str) -> int:
        gone = 0
        for key in keys:
            gone += key in self.keys()
            self.strings.pop(key, None)
            self.lists.pop(key, None)
            self.hashes.pop(key, None)
            self.ttls.pop(key, None)
        return gone

    async def expire(self, key: str, seconds: int) -> int:
        return self._expire(key, seconds)

    async def set(self, key: str, value: Any, ex: int | None = None) -> bool:
        self.strings[key] = self._b(value)
        if ex is not None:
            self.ttls[key] = ex
        return True

    async def get(self, key: str) -> bytes | None:
        return self.strings.get(key)

    async def rpush(self, key: str, *values: Any) -> int:
        items = self.lists.setdefault(key, [])
        items.extend(self._b(v) for v in values)
        return len(items)

    async def lrange(self, key: str, start: int, end: int) -> list[bytes]:
        return self.lists.get(key, [])[start : end + 1]

    async def lindex(self, key: str, index: int) -> bytes | None:
        items = self.lists.get(key, [])
        return items[index] if 0 <= index < len(items) else None

    async def hset(self, key: str, mapping: dict[str, Any]) -> int:
        h = self.hashes.setdefault(key, {})
        new = len(set(mapping) - set(h))
        h.update({k: self._b(v) for k, v in mapping.items()})
        return new

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        return {k.encode(): v for k, v in self.hashes.get(key, {}).items()}

    async def hmget(self, key: str, fields: list[str]) -> list[bytes | None]:
        h = self.hashes.get(key, {})
        return [h.get(f) for f in fields]

    async def publish(self, channel: str, message: str) -> int:
        self.published.append((channel, message))
        return 0

    async def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any:
        keys = [str(k) for k in keys_and_args[:numkeys]]
        args = [str(a) for a in keys_and_args[numkeys:]]
        commands: dict[str, Callable[..., int]] = {
            "HSETNX": self._hsetnx,
            "HINCRBY": self._hincrby,
            "EXPIRE": self._expire,
        }

        def call(cmd: str, *a: Any) -> int:
            return commands[cmd.upper()](*(str(x) for x in a[:2]), *a[2:])

        fn = self.lua.eval(f"function(redis, KEYS, ARGV)\n{script}\nend")
        redis = self.lua.table_from({"call": call})
        reply = fn(redis, self.lua.table(*keys), self.lua.table(*args))
        return int(reply)  # Redis turns a Lua number into an integer

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)


class FakePipeline:
    """Commands queued, then run in order by ``execute``."""

    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.queued: list[Callable[[], Coroutine[Any, Any, Any]]] = []

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.queued.clear()

    def __getattr__(self, name: str) -> Callable[..., FakePipeline]:
        command = getattr(self.redis, name)

        def queue(*args: Any, **kwargs: Any) -> FakePipeline:
            self.queued.append(lambda: command(*args, **kwargs))
            return self

        return queue

    async def execute(self) -> list[Any]:
        return [await run() for run in self.queued]


def redis_of(fake: FakeRedis) -> Redis:
    return cast(Redis, fake)


def test_prepared_lines_are_stored_in_order_and_read_back() -> None:
    fake = FakeRedis()
    header = PreparedHeader(total=3, endpoint=EMBEDDINGS, usage_key="usage:t", usage_ttl=60)
    lines = [
        Prepared(line=1, custom_id="a", flavor="m", body={"model": "m", "input": "x"}),
        Prepared(line=2, custom_id="b", error=LineError(status_code=404, message="gone")),
        Prepared(
            line=3, custom_id="c", flavor="m", body={"input": ["y"]}, encoding_format="base64"
        ),
    ]

    async def go() -> None:
        r = redis_of(fake)
        await batches.store_prepared(r, "t", "batch-x", header, lines, ttl=600, chunk=2)
        assert await batches.load_header(r, "t", "batch-x") == header
        assert await batches.load_prepared(r, "t", "batch-x", 0, 10) == lines
        assert await batches.load_prepared(r, "t", "batch-x", 1, 1) == lines[1:2]
        assert await batches.load_line(r, "t", "batch-x", 2) == lines[2]
        assert await batches.load_line(r, "t", "batch-x", 3) is None
        assert await batches.load_header(r, "t", "batch-y") is None
        # Storing again (a retried create) replaces, never appends.
        await batches.store_prepared(r, "t", "batch-x", header, lines[:1], ttl=600)
        assert await batches.load_prepared(r, "t", "batch-x", 0, 10) == lines[:1]
        await batches.forget_prepared(r, "t", "batch-x")
        assert await batches.load_header(r, "t", "batch-x") is None
        assert await batches.load_line(r, "t", "batch-x", 0) is None

    asyncio.run(go())
    keys = (batches.requests_key("t", "batch-x"), batches.header_key("t", "batch-x"))
    assert not fake.keys() & set(keys)


def test_a_line_recorded_twice_counts_once_in_the_batch_and_the_tenants_usage() -> None:
    fake = FakeRedis()
    header = PreparedHeader(total=3, usage_key="usage:t:2026-11", usage_ttl=999)
    ok = Line(ok=True, text='{"ok":1}', prompt_tokens=3, completion_tokens=2)
    bad = Line(ok=False, text='{"bad":1}')

    async def go() -> None:
        r = redis_of(fake)
        assert await batches.record(r, "u", 0, ok, 600, header, ("asked", "answered"))
        assert not await batches.record(r, "u", 0, ok, 600, header, ("asked", "answered"))
        assert await batches.record(r, "u", 2, bad, 600, header, ("asked", "asked"))
        assert await batches.recorded(r, "u", [0, 1, 2]) == {0, 2}
        assert await batches.recorded(r, "u", []) == set()
        assert await batches.ended_lines(r, "u") == {0: (True, '{"ok":1}'), 2: (False, '{"bad":1}')}
        prog = await batches.progress(r, "u", 3)
        assert prog.counts == RequestCounts(total=3, completed=1, failed=1)
        assert prog.usage == Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)

    asyncio.run(go())
    usage = {k: int(v) for k, v in fake.hashes["usage:t:2026-11"].items()}
    assert usage == {
        "requests": 2,
        "f:asked:requests": 2,
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "total_tokens": 5,
        "f:answered:prompt_tokens": 3,
        "f:answered:completion_tokens": 2,
        "f:answered:total_tokens": 5,
        "f:asked:prompt_tokens": 0,
        "f:asked:completion_tokens": 0,
        "f:asked:total_tokens": 0,
    }
    assert fake.ttls["usage:t:2026-11"] == 999
    assert fake.ttls[batches.results_key("u")] == fake.ttls[batches.counts_key("u")] == 600


def test_a_line_recorded_without_a_usage_hash_counts_only_in_the_batch() -> None:
    fake = FakeRedis()

    async def go() -> None:
        r = redis_of(fake)
        assert await batches.record(r, "u", 0, Line(ok=False, text="x"), 600)
        no_usage = PreparedHeader(total=1)
        assert await batches.record(r, "u", 1, Line(ok=True, text="y"), 600, no_usage)
        prog = await batches.progress(r, "u", 2)
        assert (prog.counts.completed, prog.counts.failed) == (1, 1)

    asyncio.run(go())
    assert fake.keys() == {batches.results_key("u"), batches.counts_key("u")}


def test_positions_advance_by_name_and_read_back_with_the_counts() -> None:
    fake = FakeRedis()

    async def go() -> None:
        r = redis_of(fake)
        fresh = await batches.progress(r, "u", 10)
        assert (fresh.next, fresh.low) == (0, 0)
        assert fresh.counts == RequestCounts(total=10) and fresh.usage == Usage()
        await batches.advance(r, "u", 600, next=5)
        await batches.advance(r, "u", 600, low=2)  # one position leaves the other alone
        assert (await batches.progress(r, "u", 10)).next == 5
        assert (await batches.progress(r, "u", 10)).low == 2
        await batches.record(r, "u", 0, Line(ok=True, text="a", prompt_tokens=4), 600)
        await batches.advance(r, "u", 600, next=8, low=5)
        prog = await batches.progress(r, "u", 10)
        assert (prog.next, prog.low, prog.counts.completed) == (8, 5, 1)
        assert prog.usage.prompt_tokens == 4

    asyncio.run(go())
    assert fake.ttls[batches.counts_key("u")] == 600


def test_a_cancel_is_announced_and_forgetting_drops_the_working_state() -> None:
    fake = FakeRedis()

    async def go() -> None:
        r = redis_of(fake)
        header = PreparedHeader(total=1)
        await batches.store_prepared(r, "t", "b", header, [Prepared(line=1, custom_id="a")], 60)
        await batches.record(r, "u", 0, Line(ok=True, text="a"), 60)
        await batches.advance(r, "u", 60, next=1, low=1)
        await batches.announce_cancel(r, "u")
        await batches.forget(r, "t", "b", "u")

    asyncio.run(go())
    assert fake.published == [(batches.cancel_channel("u"), "1")]
    assert fake.keys() == set()


# --------------------------------------------------------------------------- the operator


def test_the_window_holds_the_lines_queued_and_not_ended() -> None:
    win = window(low=0, next_line=5, ended={0, 1, 3}, total=10, limit=4)
    assert win.in_flight == [2, 4]
    assert win.low == 2  # line 3 ended, but line 2 has not: the window starts at 2
    assert win.room == 2 and not win.done


def test_the_low_watermark_moves_past_lines_that_ended() -> None:
    win = window(low=2, next_line=5, ended={2, 3, 4}, total=10, limit=4)
    assert (win.low, win.in_flight, win.room, win.done) == (5, [], 4, False)
    # Ends outside the queued range (recorded by another pass) change nothing.
    assert window(3, 5, {0, 1, 2, 7}, 10, 4) == window(3, 5, set(), 10, 4)


def test_room_is_bounded_by_the_limit_and_by_the_lines_left() -> None:
    assert window(0, 5, set(), 100, 5).room == 0  # the window is full
    assert window(0, 5, set(), 100, 3).room == 0  # a lowered limit never goes negative
    assert window(0, 5, {0}, 100, 5).room == 1
    assert window(0, 8, set(range(8)), 10, 5).room == 2  # only two requests left
    assert window(0, 10, set(), 10, 50).room == 0  # all queued already
    assert window(0, 0, set(), 10, 4).room == 4  # a batch that has just started


def test_a_batch_is_done_only_when_every_line_queued_has_ended() -> None:
    assert not window(0, 10, set(range(9)), 10, 5).done
    assert window(0, 10, set(range(10)), 10, 5).done
    assert window(9, 10, {9}, 10, 5) == Window(low=10, in_flight=[], room=0, done=True)
    # Nothing in flight, but lines are left to queue: not done.
    assert not window(0, 5, set(range(5)), 10, 5).done
    assert window(0, 0, set(), 0, 5).done  # a batch without requests


def test_cancelling_or_expiring_stops_a_batch() -> None:
    assert stopping(True, None, 0) == "cancelled"
    assert stopping(True, 100.0, 200.0) == "cancelled"  # a cancel says why before expiry
    assert stopping(False, None, 1e12) is None
    assert stopping(False, 100.0, 99.0) is None and stopping(False, 100.0, 100.0) == "expired"


def test_a_line_whose_worker_kept_dying_fails_as_a_server_error() -> None:
    err = lost_line(3)
    assert (err.status_code, err.type, err.code) == (500, "server_error", "WorkerLost")
    assert "3 times" in err.message
    failed = REQUEST.model_copy(update={"error": err})
    item = json.loads(batchlines.error_line("buid", failed).text)
    assert item["response"]["status_code"] == 500 and item["response"]["request_id"] is None
    assert item["response"]["body"]["error"]["code"] == "WorkerLost"


def test_status_moves_through_openais_states_and_stops_at_the_end() -> None:
    status: dict[str, Any] = {}
    mark_started(3, datetime(2026, 11, 23, 10, tzinfo=UTC))(status)
    assert status["state"] == "in_progress" and status["requestCounts"]["total"] == 3
    assert status["expiresAt"] == "2026-11-23T10:00:00Z" and "inProgressAt" in status
    started = dict(status)
    mark_started(5, datetime(2027, 1, 1, tzinfo=UTC))(status)
    assert status == started  # a batch starts once
    mark_progress("in_progress", RequestCounts(total=3, completed=1, failed=1), Usage())(status)
    assert status["message"] == "2 of 3 requests ended"
    mark_progress("cancelling", RequestCounts(total=3, completed=1), Usage())(status)
    assert status["state"] == "cancelling" and "cancellingAt" in status
    mark_ended(
        "cancelled", RequestCounts(total=3, completed=1, failed=2), Usage(), "file-o", "file-e"
    )(status)
    assert status["state"] == "cancelled" and status["outputFileId"] == "file-o"
    assert status["errorFileId"] == "file-e" and "cancelledAt" in status
    assert "or did not run" in status["message"]
    [cond] = status["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Succeeded", "False", "Cancelled")
    ended = dict(status)
    mark_progress("in_progress", RequestCounts(total=3), Usage())(status)
    mark_failed([], "late")(status)
    mark_ended("completed", RequestCounts(total=3, completed=3), Usage(), None, None)(status)
    assert status == ended  # an ended batch stays ended


def test_a_batch_that_completes_is_finalized_then_succeeds() -> None:
    status: dict[str, Any] = {"state": "in_progress"}
    usage = Usage(prompt_tokens=4, completion_tokens=6, total_tokens=10)
    mark_progress("finalizing", RequestCounts(total=2, completed=2), usage)(status)
    assert status["state"] == "finalizing" and "finalizingAt" in status
    assert status["usage"]["totalTokens"] == 10
    mark_ended("completed", RequestCounts(total=2, completed=2), usage, "file-o", None)(status)
    assert status["state"] == "completed" and "completedAt" in status
    assert "errorFileId" not in status  # nothing failed: no error file
    assert status["message"] == "completed: 2 requests succeeded, 0 failed"
    [cond] = status["conditions"]
    assert (cond["status"], cond["reason"]) == ("True", "Completed")


def test_a_refused_input_fails_the_batch_with_its_errors() -> None:
    status: dict[str, Any] = {"state": "validating"}
    errors = [{"code": "invalid_json_line", "line": 2, "message": "m"}]
    mark_failed(errors, "the input file was refused: m")(status)
    assert status["state"] == "failed" and status["errors"] == errors and "failedAt" in status
    [cond] = status["conditions"]
    assert (cond["status"], cond["reason"]) == ("False", "ValidationFailed")
    mark_started(3, datetime(2026, 11, 23, tzinfo=UTC))(status)
    assert status["state"] == "failed"  # a failed batch never starts


# --------------------------------------------------------------------------- the API's view


def batch_obj(
    spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": "batch-0a1b", "uid": "u", "creationTimestamp": "2026-11-22T10:00:00Z"},
        "spec": {
            "inputFileId": "file-in",
            "endpoint": CHAT,
            "completionWindow": "24h",
            **(spec or {}),
        },
        "status": status or {},
    }


def test_the_batch_object_has_openais_shape() -> None:
    new = batch_object(batch_obj())
    created = 1_795_341_600
    assert new["id"] == "batch_0a1b" and new["object"] == "batch"
    assert new["endpoint"] == CHAT and new["input_file_id"] == "file-in"
    assert new["status"] == "validating" and new["created_at"] == created
    assert new["expires_at"] == created + 24 * 3600
    assert new["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert new["output_file_id"] is None and new["errors"] is None
    done = batch_object(
        batch_obj(
            {"metadata": {"team": "a"}, "endpoint": RESPONSES},
            {
                "state": "completed",
                "requestCounts": {"total": 2, "completed": 1, "failed": 1},
                "completedAt": "2026-11-22T10:01:00Z",
                "outputFileId": "file-o",
                "usage": {"promptTokens": 4, "completionTokens": 6, "totalTokens": 10},
            },
        )
    )
    assert done["status"] == "completed" and done["completed_at"] == created + 60
    assert done["endpoint"] == RESPONSES
    assert done["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    assert done["metadata"] == {"team": "a"} and done["usage"]["total_tokens"] == 10
    assert (done["usage"]["input_tokens"], done["usage"]["output_tokens"]) == (4, 6)


def test_a_cancel_shows_at_once_and_errors_are_listed() -> None:
    assert (
        batch_object(batch_obj({"cancel": True}, {"state": "in_progress"}))["status"]
        == "cancelling"
    )
    assert (
        batch_object(batch_obj({"cancel": True}, {"state": "completed"}))["status"] == "completed"
    )
    failed = batch_object(
        batch_obj(
            None,
            {
                "state": "failed",
                "errors": [{"code": "invalid_json_line", "line": 2, "message": "m"}],
            },
        )
    )
    assert failed["errors"] == {
        "object": "list",
        "data": [{"code": "invalid_json_line", "line": 2, "message": "m", "param": None}],
    }


# --------------------------------------------------------------------------- files


def test_uploads_are_read_as_the_sdks_send_them() -> None:
    content = b'{"a": 1}\r\n{"b": "\xc3\xa9"}\n'
    req = httpx.Request(
        "POST",
        "http://x/v1/files",
        files={"file": ("in.jsonl", content, "application/jsonl")},
        data={"purpose": "batch"},
    )
    fields = parse_form(req.headers["content-type"], req.read())
    assert fields["file"].data == content and fields["file"].filename == "in.jsonl"
    assert fields["purpose"].data == b"batch" and fields["purpose"].filename is None
    for content_type, body in (
        ("application/json", b"{}"),
        # Headers the standard library's MIME parser trips on are a 400 too, not a 500.
        ('multipart/form-data; boundary="a b"; x\x9c\xff*', b"--abc\r\n"),
    ):
        with pytest.raises(APIError) as err:
            parse_form(content_type, body)
        assert err.value.status == 400


def test_file_pages_follow_the_after_cursor() -> None:
    items = [
        files.FileObject(id=f"file-{i}", bytes=1, created_at=i, filename="f", purpose="batch")
        for i in range(5)
    ]
    page, more = files.paginate(items, None, 2, "desc")
    assert [f.id for f in page] == ["file-4", "file-3"] and more
    page, more = files.paginate(items, "file-3", 2, "desc")
    assert [f.id for f in page] == ["file-2", "file-1"] and more
    page, more = files.paginate(items, "file-1", 2, "desc")
    assert [f.id for f in page] == ["file-0"] and not more
    assert files.paginate(items, "file-gone", 2, "asc") == ([], False)
