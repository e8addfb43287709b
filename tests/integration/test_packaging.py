"""What users install: the wheel holds the product and nothing of the dev stack."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from devstack.cluster import REPO


def test_the_wheel_holds_the_product_only(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("llmloom-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {n.rsplit("/", 1)[0] for n in names if n.endswith(".py")}
    assert packages == {"llmloom", "llmloom/api", "llmloom/operator", "llmloom/worker"}
    assert not [n for n in names if "devstack" in n or "server" in n.rsplit("/", 1)[-1]]
    assert "llmloom/operator/handlers.py" in names and "llmloom/cli.py" in names


def test_a_python_started_in_the_checkout_imports_the_standard_library() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import collections, operator; print(operator.__file__)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert not done.stdout.strip().startswith(str(REPO))
