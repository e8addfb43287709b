"""The Argo CD health checks, run by a real Lua interpreter on objects as the
operator writes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa
import pytest
import yaml

PATCH = Path(__file__).resolve().parents[2] / "examples" / "argocd" / "argocd-cm-patch.yaml"
SCRIPTS = yaml.safe_load(PATCH.read_text())["data"]


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)

    def to_lua(value: Any) -> Any:
        if isinstance(value, dict):
            return lua.table_from({k: to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([to_lua(v) for v in value])
        return value

    lua.globals().obj = to_lua(obj)
    hs = lua.execute(SCRIPTS[f"resource.customizations.health.llmloom.io_{kind}"])
    return str(hs["status"]), str(hs["message"])


def cond(ctype: str, status: str, reason: str = "R", message: str = "m") -> dict[str, Any]:
    return {"type": ctype, "status": status, "reason": reason, "message": message}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, "Progressing"),
        (
            {"observedGeneration": 1, "conditions": [cond("Ready", "True", "EndpointReady")]},
            "Healthy",
        ),
        (
            {"observedGeneration": 1, "conditions": [cond("Ready", "True", "ScaledToZero")]},
            "Healthy",
        ),
        (
            {
                "observedGeneration": 1,
                "conditions": [cond("Ready", "False", "ModelServerStarting")],
            },
            "Progressing",
        ),
        (
            {"observedGeneration": 1, "conditions": [cond("Ready", "False", "Unschedulable")]},
            "Degraded",
        ),
        ({"observedGeneration": 0, "conditions": [cond("Ready", "True")]}, "Progressing"),
    ],
)
def test_flavor_health(status: dict[str, Any] | None, expected: str) -> None:
    obj: dict[str, Any] = {"metadata": {"generation": 1}}
    if status is not None:
        obj["status"] = status
    assert health("Flavor", obj)[0] == expected


def test_job_health() -> None:
    assert health("LLMJob", {"metadata": {}})[0] == "Progressing"
    assert health(
        "LLMJob", {"status": {"state": "Queued", "conditions": [cond("Accepted", "True")]}}
    ) == ("Progressing", "Queued")
    assert (
        health(
            "LLMJob", {"status": {"state": "Succeeded", "conditions": [cond("Succeeded", "True")]}}
        )[0]
        == "Healthy"
    )
    status, message = health(
        "LLMJob",
        {
            "status": {
                "state": "Failed",
                "conditions": [cond("Failed", "True", "DeadlineExceeded", "too slow")],
            }
        },
    )
    assert (status, message) == ("Degraded", "DeadlineExceeded: too slow")
    assert health("LLMJob", {"status": {"state": "Suspended"}})[0] == "Suspended"
