"""How the worker writes a job's status, and how it counts tokens."""

from __future__ import annotations

from typing import Any

from llmloom import results
from llmloom.jobstatus import mark_finished, mark_running
from llmloom.queues import JobRef
from llmloom.resources import Flavor, LLMJob, Usage
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


def _job() -> LLMJob:
    return LLMJob.model_validate(
        {
            "metadata": {"name": "j"},
            "spec": {"flavor": "f", "messages": [{"role": "user", "content": "hello world"}]},
        }
    )


def _flavor() -> Flavor:
    return Flavor.model_validate(
        {"spec": {"provider": "openai", "model": "gpt-4", "endpoint": "http://x"}}
    )


def test_usage_prefers_the_providers_counts() -> None:
    resp = {
        "choices": [{"message": {"content": "hi"}}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15},
    }
    assert usage_of(resp, _job(), _flavor()) == Usage(
        prompt_tokens=11, completion_tokens=4, total_tokens=15
    )


def test_usage_is_counted_when_the_provider_reports_none() -> None:
    resp = {"choices": [{"message": {"content": "hello world"}}]}
    usage = usage_of(resp, _job(), _flavor())
    assert (
        usage.prompt_tokens == 2 + 3 + 3
        and usage.completion_tokens == 2
        and usage.total_tokens == 10
    )


def test_cost_from_the_flavors_pricing() -> None:
    flavor = Flavor.model_validate(
        {
            "spec": {
                "provider": "openai",
                "model": "gpt-4",
                "endpoint": "http://x",
                "pricing": {"promptPerMillion": 3, "completionPerMillion": 15},
            }
        }
    )
    resp = {
        "choices": [{"message": {"content": "hi"}}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200},
    }
    assert usage_of(resp, _job(), flavor).cost == (1000 * 3 + 200 * 15) / 1e6


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
