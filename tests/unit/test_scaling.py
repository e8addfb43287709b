"""The autoscaler scales up at once and down only after the delay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from llmloom.operator.scaling import decide, wanted

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_wanted_is_one_pod_per_concurrency_within_bounds() -> None:
    assert wanted(pending=0, running=0, per_pod=4, rmin=0, rmax=5) == 0
    assert wanted(pending=1, running=0, per_pod=4, rmin=0, rmax=5) == 1
    assert wanted(pending=5, running=4, per_pod=4, rmin=0, rmax=5) == 3
    assert wanted(pending=500, running=0, per_pod=4, rmin=0, rmax=5) == 5
    assert wanted(pending=0, running=0, per_pod=4, rmin=2, rmax=5) == 2


def test_scale_from_zero_is_immediate() -> None:
    d = decide(
        0,
        pending=1,
        running=0,
        per_pod=1,
        rmin=0,
        rmax=3,
        last_scale_time=None,
        now=T0,
        delay_seconds=300,
    )
    assert d.replicas == 1 and d.last_scale_time == T0


def test_scale_down_waits_for_the_delay() -> None:
    busy_until = T0
    d = decide(
        3,
        0,
        0,
        1,
        0,
        3,
        last_scale_time=busy_until,
        now=T0 + timedelta(seconds=299),
        delay_seconds=300,
    )
    assert d.replicas == 3 and d.last_scale_time == busy_until
    d = decide(
        3,
        0,
        0,
        1,
        0,
        3,
        last_scale_time=busy_until,
        now=T0 + timedelta(seconds=300),
        delay_seconds=300,
    )
    assert d.replicas == 0


def test_load_that_still_needs_the_pods_restarts_the_delay() -> None:
    later = T0 + timedelta(seconds=200)
    d = decide(
        2,
        pending=0,
        running=2,
        per_pod=1,
        rmin=0,
        rmax=3,
        last_scale_time=T0,
        now=later,
        delay_seconds=300,
    )
    assert d.replicas == 2 and d.last_scale_time == later
