"""How the worker writes a job's status, and how it counts tokens."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmloom import results, tokens, wire
from llmloom.jobstatus import mark_finished, mark_running
from llmloom.queues import JobRef
from llmloom.resources import Flavor, Usage
from llmloom.worker.bodies import Call
from llmloom.worker.calls import usage_of

REF = JobRef(namespace="t1", name="j", uid="u1", generation=3)


def test_running_counts_attempts_and_keeps_the_first_start() -> None:
    status: dict[str, Any] = {}
    mark_running(1, "2026-01-01T00:00:00Z")(status)
    mark_running(2, "2026-01-01T00:01:00Z")(status)
    assert status["attempts"] == 2 and status["startTime"] == "2026-01-01T00:00:00Z"
    assert status["state"] == "Running"
    mark_running(1, "2026-01-01T00:02:00Z")(status)  # Redis lost the count: it stays
    assert status["attempts"] == 2


def test_a_job_done_before_it_was_marked_running_records_its_attempt() -> None:
    status: dict[str, Any] = {}
    outcome = results.Outcome(ok=True, response={"choices": []})
    mark_finished(REF, outcome, 10, attempt=(1, "2026-01-01T00:00:00Z"))(status)
    assert status["attempts"] == 1 and status["startTime"] == "2026-01-01T00:00:00Z"
    assert status["state"] == "Succeeded"


def test_success_records_result_usage_and_flavor() -> None:
    status: dict[str, Any] = {
        "conditions": [
            {
                "type": "Accepted",
                "status": "True",
                "reason": "Enqueued",
                "message": "",
                "lastTransitionTime": "t",
            }
        ]
    }
    outcome = results.Outcome(ok=True, response={"choices": []})
    mark_finished(
        REF, outcome, 42, Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7), "small"
    )(status)
    assert status["state"] == "Succeeded"
    assert status["result"] == {"version": 3, "key": "llmloom:result:u1:v3", "bytes": 42}
    assert status["usage"] == {"promptTokens": 5, "completionTokens": 2, "totalTokens": 7}
    assert status["flavorUsed"] == "small" and status["observedGeneration"] == 3
    assert {c["type"] for c in status["conditions"]} == {"Accepted", "Succeeded"}


def test_failure_records_reason_and_message() -> None:
    status: dict[str, Any] = {}
    err = results.ErrorInfo(reason="EndpointUnreachable", message="connection refused")
    mark_finished(REF, results.Outcome(ok=False, error=err), 10, None, "small")(status)
    assert status["state"] == "Failed" and status["message"] == "connection refused"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "EndpointUnreachable" and failed["observedGeneration"] == 3


CHAT = Call(wire.CHAT, {"messages": [{"role": "user", "content": "hello world"}]})
ENC = tokens.encoding_for("gpt-4")


def n(text: str) -> int:
    return len(ENC.encode(text))


def _flavor(**spec: Any) -> Flavor:
    return Flavor.model_validate(
        {"spec": {"provider": "openai", "model": "gpt-4", "endpoint": "http://x", **spec}}
    )


def test_usage_prefers_the_providers_counts() -> None:
    resp = {
        "choices": [{"message": {"content": "hi"}}],
        "usage": {
            "prompt_tokens": 11,
            "completion_tokens": 4,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }
    assert usage_of(resp, CHAT, _flavor()) == Usage(
        prompt_tokens=11, completion_tokens=4, total_tokens=15
    )


def test_usage_is_counted_when_the_provider_reports_none() -> None:
    resp = {"choices": [{"message": {"content": "hello world"}}]}
    usage = usage_of(resp, CHAT, _flavor())
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (2 + 3 + 3, 2, 10)
    assert usage.cost is None


def test_counted_usage_includes_tools_and_tool_calls() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    call = Call(
        wire.CHAT, {"messages": [{"role": "user", "content": "hello world"}], "tools": tools}
    )
    arguments = '{"location": "Paris"}'
    resp = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": arguments},
                        }
                    ],
                }
            }
        ]
    }
    usage = usage_of(resp, call, _flavor())
    assert usage.prompt_tokens == 8 + n(json.dumps(tools, separators=(",", ":")))
    assert usage.completion_tokens == n("get_weather" + arguments)


def test_usage_of_a_response_reads_its_input_and_output_tokens() -> None:
    call = Call(wire.RESPONSES, {"input": "Tell me a story.", "instructions": "Be brief."})
    resp = {
        "object": "response",
        "output": [],
        "usage": {
            "input_tokens": 36,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 87,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 123,
        },
    }
    assert usage_of(resp, call, _flavor()) == Usage(
        prompt_tokens=36, completion_tokens=87, total_tokens=123
    )


def test_a_response_without_usage_is_counted() -> None:
    call = Call(wire.RESPONSES, {"input": "hello world", "instructions": "Be brief."})
    resp = {
        "object": "response",
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "hello world", "annotations": []}],
            }
        ],
    }
    usage = usage_of(resp, call, _flavor())
    assert usage.prompt_tokens == (3 + 2) + (3 + n("Be brief."))
    assert usage.completion_tokens == 2


def test_usage_of_completions_counted_or_reported() -> None:
    call = Call(wire.COMPLETIONS, {"prompt": ["hello world", "hello world"], "max_tokens": 5})
    counted = usage_of({"choices": [{"text": " hello"}, {"text": " world"}]}, call, _flavor())
    assert (counted.prompt_tokens, counted.completion_tokens) == (4, n(" hello world"))
    reported = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}
    assert usage_of(reported, call, _flavor()).total_tokens == 12


def test_usage_of_embeddings_has_prompt_tokens_only() -> None:
    call = Call(wire.EMBEDDINGS, {"input": ["hello world", "hello"]})
    reported = {"data": [], "usage": {"prompt_tokens": 8, "total_tokens": 8}}
    assert usage_of(reported, call, _flavor()) == Usage(
        prompt_tokens=8, completion_tokens=0, total_tokens=8
    )
    counted = usage_of({"data": [{"embedding": [0.1]}, {"embedding": [0.2]}]}, call, _flavor())
    assert counted == Usage(prompt_tokens=3, completion_tokens=0, total_tokens=3)


def test_counting_uses_the_flavors_tokenizer() -> None:
    text = "Mississippi unicorns 🦄 and naïve façades"
    call = Call(wire.CHAT, {"messages": [{"role": "user", "content": text}]})
    o200k = tokens.encoding_for("x", "o200k_base")
    usage = usage_of(
        {"choices": [{"message": {"content": text}}]}, call, _flavor(tokenizer="o200k_base")
    )
    assert usage.prompt_tokens == 3 + len(o200k.encode(text)) + 3
    assert usage.completion_tokens == len(o200k.encode(text))


def test_cost_from_the_flavors_pricing() -> None:
    flavor = _flavor(pricing={"promptPerMillion": 3, "completionPerMillion": 15})
    resp = {
        "choices": [{"message": {"content": "hi"}}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200},
    }
    assert usage_of(resp, CHAT, flavor).cost == pytest.approx((1000 * 3 + 200 * 15) / 1e6)
    counted = usage_of({"choices": [{"message": {"content": "hello world"}}]}, CHAT, flavor)
    assert counted.cost == pytest.approx((8 * 3 + 2 * 15) / 1e6)
    free = _flavor(pricing={})
    assert usage_of(resp, CHAT, free).cost == 0


def test_cost_is_rounded_to_eight_places() -> None:
    flavor = _flavor(pricing={"promptPerMillion": 0.15, "completionPerMillion": 0.6})
    resp = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
    cost = usage_of(resp, CHAT, flavor).cost
    assert cost == round((7 * 0.15 + 3 * 0.6) / 1e6, 8) and cost is not None and cost > 0


def test_running_a_resumed_job_ends_its_suspension() -> None:
    status: dict[str, Any] = {
        "conditions": [
            {
                "type": "Suspended",
                "status": "True",
                "reason": "Suspended",
                "message": "",
                "lastTransitionTime": "t",
            }
        ]
    }
    mark_running(1, "2026-01-01T00:00:00Z")(status)
    assert status["state"] == "Running"
    assert (
        status["conditions"][0]["status"] == "False"
        and status["conditions"][0]["reason"] == "Resumed"
    )


def test_a_status_write_is_tried_again_only_while_the_api_server_is_away() -> None:
    import aiohttp

    from llmloom.kube import KubeError
    from llmloom.worker.processing import passing

    assert passing(KubeError(503, "ServiceUnavailable", "restarting"))
    assert passing(KubeError(429, "TooManyRequests", "storage is (re)initializing"))
    assert passing(aiohttp.ClientConnectionError("refused")) and passing(ConnectionRefusedError())
    assert not passing(KubeError(409, "Conflict", "changed"))
    assert not passing(KubeError(403, "Forbidden", "no"))
    assert not passing(ValueError("a bug"))
