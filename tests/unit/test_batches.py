"""Batches without a cluster: the input file's checks, each line prepared as the same
request would be, the output and error lines, the operator's plan and status, and the
OpenAI Batch object."""

from __future__ import annotations

import base64
import json
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmloom import batches, files
from llmloom.api import batchfile
from llmloom.api.batches import batch_object, prepare_line
from llmloom.api.batchfile import InputLine
from llmloom.api.errors import APIError
from llmloom.api.files import parse_form
from llmloom.batches import LineError, Prepared
from llmloom.kube import is_name
from llmloom.operator import batchoutput
from llmloom.operator.batches import (
    Child,
    build_job,
    child_of,
    fallback_error,
    mark_ended,
    mark_failed,
    mark_progress,
    mark_started,
    plan,
    stopping,
)
from llmloom.resources import Flavor, LLMBatch, RequestCounts, Usage
from llmloom.results import ErrorInfo, Outcome

CHAT = "/v1/chat/completions"


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


def test_batch_ids_map_to_kubernetes_names_and_back() -> None:
    name = batches.new_name()
    assert name.startswith("batch-") and len(name) == 30
    bid = batches.batch_id(name)
    assert bid.startswith("batch_") and batches.batch_name(bid) == name
    assert batches.batch_id("nightly") == "nightly" == batches.batch_name("nightly")
    # Ids that cannot name an LLMBatch are never sent to the API server (they answer 404).
    assert is_name(name, batches.MAX_NAME_LENGTH)
    assert not any(is_name(n, batches.MAX_NAME_LENGTH) for n in ["..", "Batch-A", "a_b", ""])


# --------------------------------------------------------------------------- preparing


def flavor(name: str, model: str = "echo", capabilities: list[str] | None = None) -> Flavor:
    return Flavor.model_validate(
        {
            "metadata": {"name": name, "namespace": "t"},
            "spec": {
                "provider": "openai",
                "model": model,
                "endpoint": "http://x/v1",
                "capabilities": capabilities or ["chat"],
            },
        }
    )


def test_a_chat_line_becomes_a_low_priority_job_on_the_resolved_flavor() -> None:
    body = json.loads(line("a", max_completion_tokens=5, stop="\n"))["body"]
    got = prepare_line(InputLine(4, "a", body), CHAT, {"echo": flavor("echo-flavor")})
    assert got.error is None and got.spec is not None
    assert got.spec["flavor"] == "echo-flavor" and got.spec["task"] == "chat"
    assert got.spec["priority"] == batches.JOB_PRIORITY < 0  # behind interactive requests
    assert got.spec["parameters"] == {"maxTokens": 5, "stop": ["\n"]}
    assert (got.line, got.custom_id) == (4, "a")


def test_a_line_fails_as_the_same_request_would() -> None:
    missing = APIError(
        404, "The model 'nope' does not exist", param="model", code="model_not_found"
    )
    unknown = prepare_line(
        InputLine(1, "a", {"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
        CHAT,
        {"nope": missing},
    )
    assert unknown.spec is None and unknown.error is not None
    assert (unknown.error.status_code, unknown.error.code) == (404, "model_not_found")
    invalid = prepare_line(InputLine(2, "b", {"model": "echo", "messages": []}), CHAT, {})
    assert invalid.error is not None and invalid.error.status_code == 400
    assert invalid.error.param == "messages"
    streamed = prepare_line(
        InputLine(3, "c", json.loads(line("c", stream=True))["body"]), CHAT, {"echo": flavor("e")}
    )
    assert streamed.error is not None and streamed.error.param == "stream"


def test_an_embeddings_line_checks_the_capability_and_keeps_its_encoding() -> None:
    body = {"model": "minilm", "input": ["a", "b"], "encoding_format": "base64"}
    ok = prepare_line(
        InputLine(1, "e", body), "/v1/embeddings", {"minilm": flavor("m", "minilm", ["embeddings"])}
    )
    assert ok.spec is not None and ok.spec["texts"] == ["a", "b"]
    assert ok.encoding_format == "base64"
    chat_only = prepare_line(InputLine(1, "e", body), "/v1/embeddings", {"minilm": flavor("m")})
    assert chat_only.error is not None and chat_only.error.code == "model_not_supported"


# --------------------------------------------------------------------------- output lines

REQUEST = Prepared(line=1, custom_id="req-1", spec={"flavor": "echo"})


def test_a_succeeded_job_writes_openais_output_line() -> None:
    answer = {"id": "chatcmpl-1", "choices": [{"message": {"content": "hello"}}]}
    outcome = Outcome(ok=True, response=answer, usage={"promptTokens": 3, "completionTokens": 2})
    out = batchoutput.response_line(
        REQUEST, "batch-x-0", "uid-1", outcome, LineError(status_code=500, message="x")
    )
    item = json.loads(out.text)
    assert out.ok and (out.prompt_tokens, out.completion_tokens) == (3, 2)
    assert item["id"].startswith("batch_req_") and item["custom_id"] == "req-1"
    assert item["response"] == {"status_code": 200, "request_id": "batch-x-0", "body": answer}
    assert item["error"] is None


def test_a_failed_job_writes_the_status_and_envelope_the_api_would_answer() -> None:
    err = ErrorInfo(reason="ProviderUnauthorized", message="bad key", status_code=502)
    out = batchoutput.response_line(
        REQUEST, "j", "u", Outcome(ok=False, error=err), LineError(status_code=500, message="x")
    )
    item = json.loads(out.text)
    assert not out.ok and item["response"]["status_code"] == 502
    assert item["response"]["body"]["error"] == {
        "message": "bad key",
        "type": "upstream_error",
        "param": None,
        "code": "ProviderUnauthorized",
    }
    # A job refused by the operator has no stored outcome: its condition says why.
    child = Child("j", "u", 1, 0, True, "FlavorNotFound", "flavor echo not found")
    gone = json.loads(
        batchoutput.response_line(REQUEST, "j", "u", None, fallback_error(child)).text
    )
    assert gone["response"]["status_code"] == 404
    assert gone["response"]["body"]["error"]["code"] == "FlavorNotFound"


def test_base64_embeddings_are_packed_as_openai_does() -> None:
    request = REQUEST.model_copy(update={"encoding_format": "base64"})
    answer = {"object": "list", "data": [{"index": 0, "embedding": [0.5, -1.0]}]}
    out = batchoutput.response_line(
        request,
        "j",
        "u",
        Outcome(ok=True, response=answer),
        LineError(status_code=500, message="x"),
    )
    packed = json.loads(out.text)["response"]["body"]["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(packed)) == (0.5, -1.0)


def test_refused_and_unexecuted_requests_go_to_the_error_file() -> None:
    refused = REQUEST.model_copy(
        update={
            "spec": None,
            "error": LineError(status_code=404, message="no model", code="model_not_found"),
        }
    )
    item = json.loads(batchoutput.error_line("buid", refused).text)
    assert item["response"]["status_code"] == 404 and item["custom_id"] == "req-1"
    cancelled = json.loads(batchoutput.unexecuted_line("buid", REQUEST, "cancelled").text)
    assert cancelled["response"] is None and cancelled["error"]["code"] == "batch_cancelled"
    expired = json.loads(batchoutput.unexecuted_line("buid", REQUEST, "expired").text)
    assert expired["error"]["code"] == "batch_expired"
    # Ids are stable per request (a file written again after a crash is the same file).
    assert item["id"] == json.loads(batchoutput.error_line("buid", refused).text)["id"]
    assert batches.output_file_id("u", "output") != batches.output_file_id("u", "error")


# --------------------------------------------------------------------------- the operator


def child(index: int, finished: bool) -> Child:
    return Child(f"b-{index}", f"uid-{index}", 1, index, finished)


def test_a_batch_keeps_at_most_its_window_of_jobs_in_flight() -> None:
    running = [child(i, False) for i in range(3)]
    step = plan([*running, child(3, True)], next_position=4, total=10, window=5, stop=None)
    assert [c.index for c in step.collect] == [3] and step.stop == []
    assert step.room == 2 and step.ending is None
    assert plan(running, 4, 10, window=3, stop=None).room == 0
    assert plan([], 8, 10, window=5, stop=None).room == 2  # only two requests left


def test_a_batch_completes_when_every_request_ended() -> None:
    assert plan([child(9, True)], 10, 10, 5, None).ending == "completed"
    assert plan([child(9, False)], 10, 10, 5, None).ending is None


def test_cancelling_or_expiring_stops_the_jobs_in_flight() -> None:
    jobs = [child(0, True), child(1, False)]
    step = plan(jobs, 2, 10, 5, stop="cancelled")
    assert [c.index for c in step.collect] == [0] and [c.index for c in step.stop] == [1]
    assert step.room == 0 and step.ending == "cancelled"
    assert stopping(True, None, 0) == "cancelled"
    assert stopping(False, 100.0, 99.0) is None and stopping(False, 100.0, 100.0) == "expired"


def test_a_batch_job_is_owned_labelled_and_annotated() -> None:
    batch = LLMBatch.model_validate(
        {
            "metadata": {"name": "batch-ab", "uid": "u1"},
            "spec": {"inputFileId": "f", "endpoint": CHAT},
        }
    )
    job = build_job(batch, 7, REQUEST.model_copy(update={"line": 9}))
    meta = job["metadata"]
    assert meta["name"] == "batch-ab-7" and meta["labels"] == {batches.BATCH_LABEL: "batch-ab"}
    assert meta["ownerReferences"][0]["uid"] == "u1" and meta["ownerReferences"][0]["controller"]
    summary = child_of({**job, "metadata": {**meta, "uid": "c1", "generation": 1}})
    assert summary is not None and (summary.index, summary.finished) == (7, False)
    assert child_of({"metadata": {"name": "x", "uid": "y"}}) is None


def test_status_moves_through_openais_states_and_stops_at_the_end() -> None:
    status: dict[str, Any] = {}
    mark_started(3, datetime(2026, 11, 23, 10, tzinfo=UTC))(status)
    assert status["state"] == "in_progress" and status["requestCounts"]["total"] == 3
    assert status["expiresAt"] == "2026-11-23T10:00:00Z"
    mark_progress("cancelling", RequestCounts(total=3, completed=1), Usage())(status)
    assert status["state"] == "cancelling" and "cancellingAt" in status
    mark_ended(
        "cancelled", RequestCounts(total=3, completed=1, failed=2), Usage(), "file-o", "file-e"
    )(status)
    assert status["state"] == "cancelled" and status["outputFileId"] == "file-o"
    [cond] = status["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Succeeded", "False", "Cancelled")
    mark_progress("in_progress", RequestCounts(total=3), Usage())(status)
    mark_failed([], "late")(status)
    assert status["state"] == "cancelled"  # an ended batch stays ended


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
    assert new["status"] == "validating" and new["created_at"] == created
    assert new["expires_at"] == created + 24 * 3600
    assert new["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert new["output_file_id"] is None and new["errors"] is None
    done = batch_object(
        batch_obj(
            {"metadata": {"team": "a"}},
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
    assert done["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    assert done["metadata"] == {"team": "a"} and done["usage"]["total_tokens"] == 10


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


def test_the_example_batch_file_is_accepted() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "batch" / "requests.jsonl"
    parsed = batchfile.parse_input(path.read_bytes(), CHAT)
    assert parsed.errors == [] and len(parsed.requests) == 3
    resolved: dict[str, Flavor | APIError] = {"smollm2": flavor("smollm2", "smollm2")}
    assert all(prepare_line(r, CHAT, resolved).spec for r in parsed.requests)
