"""The CRDs in crds/ are exactly what the models generate, and are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from llmloom import crdgen, resources

CRDS = Path(__file__).resolve().parents[2] / "crds"


@pytest.mark.parametrize("info", crdgen.CRDS, ids=lambda i: i.kind)
def test_checked_in_crd_matches_the_models(info: crdgen.CrdInfo) -> None:
    path = CRDS / crdgen.filename(info)
    assert path.read_text() == crdgen.render(info), (
        f"{path} drifted from core/resources.py: run `make crds` and commit the result"
    )
    chart = CRDS.parent / crdgen.CHART_COPY / crdgen.filename(info)
    assert chart.read_text() == crdgen.render_for_chart(info), f"{chart} drifted: run `make crds`"


def _walk(node: Any, path: str = "") -> list[str]:
    """Paths of schema nodes that a structural schema forbids."""
    bad: list[str] = []
    if isinstance(node, dict):
        for key in ("$ref", "anyOf", "oneOf", "allOf", "title", "const", "$defs"):
            if key in node and not path.endswith(".properties"):
                bad.append(f"{path}.{key}")
        if "properties" in node and node.get("type") != "object":
            bad.append(f"{path}: properties without type object")
        for key, value in node.items():
            bad += _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            bad += _walk(value, f"{path}[{i}]")
    return bad


@pytest.mark.parametrize("info", crdgen.CRDS, ids=lambda i: i.kind)
def test_schema_is_structural(info: crdgen.CrdInfo) -> None:
    schema = crdgen.crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema) == []


def test_every_spec_field_is_documented() -> None:
    def undocumented(node: dict[str, Any], path: str) -> list[str]:
        out = []
        for name, sub in node.get("properties", {}).items():
            if "description" not in sub:
                out.append(f"{path}.{name}")
            out += undocumented(sub, f"{path}.{name}")
            if "items" in sub:
                out += undocumented(sub["items"], f"{path}.{name}[]")
        return out

    for info in crdgen.CRDS:
        spec = crdgen.crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
            "spec"
        ]
        assert undocumented(spec, info.kind) == []


def test_optional_fields_are_not_required_and_lose_null_defaults() -> None:
    job = crdgen.model_schema(resources.LLMJobSpec)
    assert job["required"] == ["flavor"]
    params = job["properties"]["parameters"]
    assert params["type"] == "object" and "default" not in params
    assert job["properties"]["messages"]["minItems"] == 1


def test_exclusive_minimum_uses_the_openapi_3_0_form() -> None:
    flavor = crdgen.model_schema(resources.FlavorSpec)
    timeout = flavor["properties"]["timeoutSeconds"]
    assert timeout["minimum"] == 0 and timeout["exclusiveMinimum"] is True


def test_rendered_yaml_round_trips() -> None:
    for info in crdgen.CRDS:
        assert yaml.safe_load(crdgen.render(info)) == crdgen.crd(info)


# Words YAML 1.1 reads as booleans (kubectl and the API server read YAML 1.1): a field
# named like one would be stored as "true"/"false" by anyone writing it in a manifest.
YAML11_BOOLEANS = {"y", "n", "yes", "no", "on", "off", "true", "false"}


@pytest.mark.parametrize("info", crdgen.CRDS, ids=lambda i: i.kind)
def test_no_field_is_named_like_a_yaml_boolean(info: crdgen.CrdInfo) -> None:
    def names(node: Any) -> list[str]:
        if not isinstance(node, dict):
            return []
        found = [k.lower() for k in node.get("properties", {})]
        for child in (*node.get("properties", {}).values(), node.get("items")):
            found += names(child)
        return found

    for version in crdgen.crd(info)["spec"]["versions"]:
        assert not YAML11_BOOLEANS & set(names(version["schema"]["openAPIV3Schema"]))


def test_unknown_fields_are_named_with_their_path() -> None:
    spec = {
        "flavor": "f",
        "messages": [{"role": "user", "content": "x"}, {"role": "user", "contnet": "y"}],
        "parameters": {"temperature": 1, "max_tokens": 5, "maxTokens": 5},
        "document": {"text": "t"},
        "colour": "red",
    }
    assert resources.unknown_fields(resources.LLMJobSpec, spec, "spec") == [
        "spec.messages[1].contnet",
        "spec.colour",
    ]
    # A free-form object (a JSON schema) is the user's own: nothing in it is unknown.
    form = {"type": "json_schema", "jsonSchema": {"schema": {"anything": 1}}}
    assert resources.unknown_fields(resources.ResponseFormat, form) == []
