"""Every example manifest is valid against the models the CRDs are made from."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmloom.resources import ClusterFlavor, Flavor, LLMJob, Model

EXAMPLES = sorted(
    p
    for p in (Path(__file__).resolve().parents[2] / "examples").glob("*.yaml")
    if p.name != "kustomization.yaml"
)
KINDS: dict[str, type[Model]] = {"Flavor": Flavor, "ClusterFlavor": ClusterFlavor, "LLMJob": LLMJob}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_parses(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        assert doc["apiVersion"] == "llmloom.io/v1alpha1"
        KINDS[doc["kind"]].model_validate(doc)
