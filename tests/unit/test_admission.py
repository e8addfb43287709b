"""What the operator decides for a job, and how it records that on the object."""

from __future__ import annotations

from typing import Any

from llmloom import origin
from llmloom.operator.admission import admit, needs_admission, record
from llmloom.resources import Flavor, LLMJob


def job(generation: int = 1, conditions: list[dict[str, Any]] | None = None) -> LLMJob:
    return LLMJob.model_validate(
        {
            "metadata": {"name": "j", "namespace": "t1", "uid": "u", "generation": generation},
            "spec": {"flavor": "small", "messages": [{"role": "user", "content": "hi"}]},
            "status": {"conditions": conditions or []},
        }
    )


def flavor(capabilities: list[str] | None = None) -> Flavor:
    return Flavor.model_validate(
        {
            "metadata": {"name": "small", "namespace": "t1"},
            "spec": {
                "provider": "openai",
                "model": "m",
                "endpoint": "http://x/v1",
                "capabilities": capabilities or ["chat"],
            },
        }
    )


def test_job_on_existing_flavor_is_enqueued_on_its_queue() -> None:
    adm = admit(job(), flavor(), age_seconds=0, grace_seconds=30)
    assert (adm.action, adm.reason) == ("enqueue", "Enqueued")
    assert "t1/small" in adm.message


def test_missing_flavor_is_waited_for_then_fails_with_a_reason() -> None:
    assert admit(job(), None, age_seconds=5, grace_seconds=30).action == "wait"
    adm = admit(job(), None, age_seconds=31, grace_seconds=30)
    assert (adm.action, adm.reason) == ("reject", "FlavorNotFound")
    assert "'small' does not exist in namespace 't1'" in adm.message


def test_task_the_flavor_cannot_run_is_rejected() -> None:
    adm = admit(job(), flavor(["embeddings"]), age_seconds=0, grace_seconds=30)
    assert (adm.action, adm.reason) == ("reject", "TaskNotSupported")


def test_finished_version_is_left_alone() -> None:
    done = [
        {
            "type": "Succeeded",
            "status": "True",
            "reason": "Completed",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 1,
        }
    ]
    assert admit(job(1, done), flavor(), 0, 30).action == "skip"
    assert admit(job(2, done), flavor(), 0, 30).action == "enqueue"


def body(generation: int, status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "status": status}


def record_admission(adm: Any, generation: int) -> Any:
    """The recording as the job controller writes it: on the status, of the version that
    is current (``update_status`` writes nothing once the spec moved on)."""

    def apply(b: dict[str, Any]) -> None:
        if b["metadata"]["generation"] == generation:
            record(adm, generation)(b["status"])

    return apply


def test_recording_acceptance_never_regresses_a_finished_job() -> None:
    adm = admit(job(), flavor(), 0, 30)
    # The worker finished before the operator got to record the admission.
    b = body(
        1,
        {
            "state": "Succeeded",
            "message": "completed",
            "conditions": [
                {
                    "type": "Succeeded",
                    "status": "True",
                    "reason": "Completed",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                    "observedGeneration": 1,
                }
            ],
        },
    )
    record_admission(adm, 1)(b)
    assert b["status"]["state"] == "Succeeded"
    assert b["status"]["message"] == "completed"
    assert {c["type"] for c in b["status"]["conditions"]} == {"Succeeded", "Accepted"}


def test_rejection_fails_the_job_with_reason_and_message() -> None:
    adm = admit(job(), None, 60, 30)
    b = body(1, {})
    record_admission(adm, 1)(b)
    st = b["status"]
    assert st["state"] == "Failed"
    failed = next(c for c in st["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "FlavorNotFound" and failed["status"] == "True"
    assert "completionTime" in st


def test_a_new_spec_version_drops_the_old_result_conditions() -> None:
    old = {
        "type": "Succeeded",
        "status": "True",
        "reason": "Completed",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }
    b = body(2, {"state": "Succeeded", "conditions": [old]})
    record_admission(admit(job(2, [old]), flavor(), 0, 30), 2)(b)
    assert b["status"]["state"] == "Queued"


def test_recording_is_skipped_when_the_spec_moved_on() -> None:
    b = body(3, {})
    record_admission(admit(job(2), flavor(), 0, 30), 2)(b)
    assert b["status"] == {}


ACCEPTED = {
    "type": "Accepted",
    "status": "True",
    "reason": "Enqueued",
    "lastTransitionTime": "2026-01-01T00:00:00Z",
    "observedGeneration": 1,
}


def test_a_new_or_edited_spec_needs_admission_until_accepted() -> None:
    new = {"metadata": {"generation": 1}, "spec": {}, "status": {}}
    assert needs_admission(new)
    accepted = {"metadata": {"generation": 1}, "spec": {}, "status": {"conditions": [ACCEPTED]}}
    assert not needs_admission(accepted)
    edited = {**accepted, "metadata": {"generation": 2}}
    assert needs_admission(edited)


def test_a_job_waiting_for_its_flavor_still_needs_admission() -> None:
    waiting = body(1, {})
    record(admit(job(), None, 5, 30), 1)(waiting["status"])
    assert needs_admission({**waiting, "spec": {}})


def test_suspended_rejected_and_requests_jobs_need_none() -> None:
    held = body(1, {})
    suspended_job = LLMJob.model_validate(
        {**job().model_dump(by_alias=True), "spec": {**job().spec.wire(), "suspend": True}}
    )
    record(admit(suspended_job, flavor(), 0, 30), 1)(held["status"])
    assert not needs_admission({**held, "spec": {"suspend": True}})
    assert needs_admission({**held, "spec": {"suspend": False}})
    refused = body(1, {})
    record(admit(job(), None, 60, 30), 1)(refused["status"])
    assert not needs_admission({**refused, "spec": {}})
    request = {"metadata": {"generation": 1, "labels": {origin.LABEL: origin.REQUEST}}}
    assert not needs_admission(request)
    deleting = {"metadata": {"generation": 1, "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    assert not needs_admission(deleting)
