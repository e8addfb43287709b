"""The images cannot be built here (no container engine): check that what the
Dockerfiles copy and run exists, so a build elsewhere does not fail on it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from llmloom import cli, tokens

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "Dockerfile.operator", ROOT / "Dockerfile.worker"]


def instructions(path: Path) -> list[tuple[str, str]]:
    text = path.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_copied_sources_exist(path: Path) -> None:
    for word, rest in instructions(path):
        if word == "COPY" and "--from=" not in rest:
            *sources, _dest = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{path.name} copies {source}, which is missing"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_entrypoint_and_command_exist(path: Path) -> None:
    found = dict(instructions(path))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert found["ENTRYPOINT"] == '["llmloom"]' and "llmloom" in scripts
    (command,) = re.findall(r'"(\w+)"', found["CMD"])
    cli.parser().parse_args([command])  # a subcommand the CLI knows


def test_the_build_step_that_bakes_tiktoken_runs() -> None:
    for path in DOCKERFILES:
        assert "tokens.prepare_offline_cache()" in path.read_text()
    assert callable(tokens.prepare_offline_cache)
