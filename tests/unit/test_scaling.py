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
        low_since=None,
        now=T0,
        delay_seconds=300,
    )
    assert d.replicas == 1 and d.last_scale_time == T0


def test_scale_down_waits_for_the_delay_from_when_the_load_fell() -> None:
    quiet = T0 + timedelta(seconds=1000)
    d = decide(3, 0, 0, 1, 0, 3, last_scale_time=T0, low_since=None, now=quiet, delay_seconds=300)
    assert (d.replicas, d.last_scale_time, d.low_since) == (3, T0, quiet)
    later = quiet + timedelta(seconds=299)
    d = decide(3, 0, 0, 1, 0, 3, last_scale_time=T0, low_since=quiet, now=later, delay_seconds=300)
    assert (d.replicas, d.last_scale_time, d.low_since) == (3, T0, quiet)
    done = quiet + timedelta(seconds=300)
    d = decide(3, 0, 0, 1, 0, 3, last_scale_time=T0, low_since=quiet, now=done, delay_seconds=300)
    assert (d.replicas, d.last_scale_time, d.low_since) == (0, done, None)


def test_load_that_still_needs_the_pods_ends_the_quiet_spell() -> None:
    later = T0 + timedelta(seconds=200)
    d = decide(
        2,
        pending=0,
        running=2,
        per_pod=1,
        rmin=0,
        rmax=3,
        last_scale_time=T0,
        low_since=T0 + timedelta(seconds=100),
        now=later,
        delay_seconds=300,
    )
    assert (d.replicas, d.last_scale_time, d.low_since) == (2, T0, None)


def test_a_steady_flavor_keeps_its_last_scale_time() -> None:
    """No status write per resync: only a change of the count moves the time."""
    for k in range(5):
        now = T0 + timedelta(seconds=30 * k)
        d = decide(1, 0, 1, 1, 0, 3, last_scale_time=T0, low_since=None, now=now, delay_seconds=60)
        assert (d.replicas, d.last_scale_time, d.low_since) == (1, T0, None)
