"""Conditions keep their transition times honest and the state follows them."""

from __future__ import annotations

from llmloom import conditions as c


def test_transition_time_moves_only_when_status_changes() -> None:
    conds = c.set_condition([], c.ACCEPTED, "False", "FlavorNotFound", "waiting", 1, at="t1")
    conds = c.set_condition(
        conds, c.ACCEPTED, "False", "FlavorNotFound", "still waiting", 1, at="t2"
    )
    assert conds[0]["lastTransitionTime"] == "t1"
    assert conds[0]["message"] == "still waiting"
    conds = c.set_condition(conds, c.ACCEPTED, "True", "Enqueued", "queued", 1, at="t3")
    assert conds == [
        {
            "type": "Accepted",
            "status": "True",
            "reason": "Enqueued",
            "message": "queued",
            "lastTransitionTime": "t3",
            "observedGeneration": 1,
        }
    ]


def test_other_conditions_are_kept() -> None:
    conds = c.set_condition([], c.SUCCEEDED, "True", "Completed", "", 2)
    conds = c.set_condition(conds, c.ACCEPTED, "True", "Enqueued", "", 2)
    assert {x["type"] for x in conds} == {"Succeeded", "Accepted"}


def test_state_follows_conditions() -> None:
    assert c.job_state([]) == "Pending"
    accepted = c.set_condition([], c.ACCEPTED, "True", "Enqueued")
    assert c.job_state(accepted) == "Queued"
    assert c.job_state(accepted, running=True) == "Running"
    done = c.set_condition(accepted, c.SUCCEEDED, "True", "Completed")
    assert c.job_state(done, running=True) == "Succeeded"
    failed = c.set_condition(accepted, c.FAILED, "True", "FlavorNotFound")
    assert c.job_state(failed) == "Failed"


def test_finished_is_per_generation() -> None:
    done = c.set_condition([], c.SUCCEEDED, "True", "Completed", generation=1)
    assert c.finished(done, 1)
    assert not c.finished(done, 2)
