"""The shell scripts in hack/ pass shellcheck (kind-e2e.sh cannot run on machines
without Docker, so this is what keeps it honest there)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[2] / "hack").glob("*.sh"))
SHELLCHECK = shutil.which("shellcheck") or str(
    Path(__import__("sys").executable).parent / "shellcheck"
)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script: Path) -> None:
    res = subprocess.run(
        [SHELLCHECK, "--severity=style", str(script)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout


def test_kind_e2e_is_there() -> None:
    assert any(s.name == "kind-e2e.sh" for s in SCRIPTS)
