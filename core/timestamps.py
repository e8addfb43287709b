"""Kubernetes timestamps both ways: RFC 3339 in UTC, whole seconds
("2026-12-01T04:19:29Z"), as the API server writes ``creationTimestamp`` and as
conditions and status fields carry them."""

from __future__ import annotations

from datetime import UTC, datetime

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format(at: datetime) -> str:
    """A time as Kubernetes writes it (a naive time is taken as UTC)."""
    aware = at if at.tzinfo else at.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime(FORMAT)


def now() -> str:
    """The current time as Kubernetes writes it."""
    return format(datetime.now(UTC))


def parse(value: str | datetime | None) -> datetime | None:
    """A timestamp read from an object (any RFC 3339 form; fractions and offsets too)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def epoch(value: str | datetime | None) -> float | None:
    """A timestamp as seconds since the epoch; None when there is none."""
    at = parse(value)
    return at.timestamp() if at is not None else None
