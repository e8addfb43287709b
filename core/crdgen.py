"""Generates the CustomResourceDefinitions from the models in ``llmloom.resources``.

The pydantic JSON schema is turned into a structural OpenAPI v3 schema as the
API server wants it: references inlined, optional fields as plain types, no
titles, ``exclusiveMinimum`` in its OpenAPI 3.0 form. ``python -m
llmloom.crdgen crds/`` rewrites the checked-in files; a unit test compares them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from llmloom import GROUP, VERSION, resources

Schema = dict[str, Any]


@dataclass(frozen=True)
class CrdInfo:
    """Names, printer columns and models of one custom resource."""

    kind: str
    plural: str
    singular: str
    short_names: list[str]
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    columns: list[dict[str, Any]] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    """CEL rules on the whole object (only these can see metadata.name)."""
    scale: dict[str, str] | None = None
    """The scale subresource's paths, when the resource has one."""
    selectable: list[str] = field(default_factory=list)
    """Fields a list or watch can select on (``fieldSelector``; Kubernetes 1.32+)."""
    scope: str = "Namespaced"


def _cond(ctype: str, field: str = "status") -> str:
    return f'.status.conditions[?(@.type=="{ctype}")].{field}'


# Flavor names become Deployment and Service names and label values (63 characters).
_NAME_RULE = resources.cel(
    "size(self.metadata.name) <= 50",
    "Flavor names are at most 50 characters: they name Deployments, Services and labels",
)


def _flavor_columns(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    """The printer columns of a Flavor (and, with ``extra`` before Age, of a
    ClusterFlavor)."""
    return [
        {"name": "Provider", "type": "string", "jsonPath": ".spec.provider"},
        {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
        {"name": "Ready", "type": "string", "jsonPath": _cond("Ready")},
        {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas.ready"},
        *extra,
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Reason", "type": "string", "jsonPath": _cond("Ready", "reason"), "priority": 1},
        {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1},
    ]


_FLAVOR_SCALE = {
    "specReplicasPath": ".spec.deploy.replicas.min",
    "statusReplicasPath": ".status.replicas.ready",
    "labelSelectorPath": ".status.selector",
}

CRDS = [
    CrdInfo(
        kind="Flavor",
        plural="flavors",
        singular="flavor",
        short_names=["flv"],
        spec=resources.FlavorSpec,
        status=resources.FlavorStatus,
        description="A model endpoint: how to reach (or run) one model.",
        columns=_flavor_columns(),
        rules=[_NAME_RULE],
        scale=_FLAVOR_SCALE,
    ),
    CrdInfo(
        kind="ClusterFlavor",
        plural="clusterflavors",
        singular="clusterflavor",
        short_names=["cflv"],
        spec=resources.ClusterFlavorSpec,
        status=resources.ClusterFlavorStatus,
        description=(
            "A model shared by many tenants: a Flavor outside any namespace, used by the "
            "namespaces its tenantSelector grants, each on its own terms (weight, limits)."
        ),
        columns=_flavor_columns(
            {"name": "Tenants", "type": "integer", "jsonPath": ".status.tenants"}
        ),
        rules=[_NAME_RULE],
        scale=_FLAVOR_SCALE,
        scope="Cluster",
    ),
    CrdInfo(
        kind="APIToken",
        plural="apitokens",
        singular="apitoken",
        short_names=["llmtok"],
        spec=resources.APITokenSpec,
        status=resources.APITokenStatus,
        description=(
            "A bearer token of the namespace's tenant for LLMLoom's API, kept as its sha256 "
            "only (made by `llmloom token create`)."
        ),
        columns=[
            {"name": "Description", "type": "string", "jsonPath": ".spec.description"},
            {"name": "Expires", "type": "date", "jsonPath": ".spec.expiresAt"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    ),
    CrdInfo(
        kind="LLMJob",
        plural="llmjobs",
        singular="llmjob",
        short_names=["llmj"],
        spec=resources.LLMJobSpec,
        status=resources.LLMJobStatus,
        description="One unit of LLM work (a chat completion) run on a Flavor.",
        # Each worker watches only its flavors' jobs: fieldSelector=spec.flavor=<name>.
        selectable=[".spec.flavor"],
        columns=[
            {"name": "Flavor", "type": "string", "jsonPath": ".spec.flavor"},
            {"name": "Task", "type": "string", "jsonPath": ".spec.task"},
            {"name": "State", "type": "string", "jsonPath": ".status.state"},
            {"name": "Tokens", "type": "integer", "jsonPath": ".status.usage.totalTokens"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
        ],
    ),
    CrdInfo(
        kind="LLMBatch",
        plural="llmbatches",
        singular="llmbatch",
        short_names=["llmb"],
        spec=resources.LLMBatchSpec,
        status=resources.LLMBatchStatus,
        description="An OpenAI batch: the requests of an input file, run as LLMJobs.",
        columns=[
            {"name": "State", "type": "string", "jsonPath": ".status.state"},
            {"name": "Total", "type": "integer", "jsonPath": ".status.requestCounts.total"},
            {
                "name": "Completed",
                "type": "integer",
                "jsonPath": ".status.requestCounts.completed",
            },
            {"name": "Failed", "type": "integer", "jsonPath": ".status.requestCounts.failed"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            {"name": "Endpoint", "type": "string", "jsonPath": ".spec.endpoint", "priority": 1},
            {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
        ],
        rules=[
            resources.cel(
                "size(self.metadata.name) <= 56",
                "LLMBatch names are at most 56 characters: they name and label the batch's "
                "jobs (<batch>-<n>)",
            )
        ],
    ),
]


def structural(schema: Schema, defs: dict[str, Schema] | None = None) -> Schema:
    """Turn one pydantic JSON-schema node into a structural OpenAPI v3 node."""
    defs = schema.get("$defs", {}) if defs is None else defs
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, defs)
    if "anyOf" in schema:
        variants = [v for v in schema["anyOf"] if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"unions other than Optional[X] have no structural form: {schema}")
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        if rest.get("default", 0) is None:
            del rest["default"]
        return structural({**variants[0], **rest}, defs)

    out: Schema = {}
    free_form = schema.get("x-kubernetes-preserve-unknown-fields") is True
    for key, value in schema.items():
        if key in ("title", "$defs") or (key == "additionalProperties" and value is False):
            continue  # no titles in CRDs; unknown fields are pruned by the server anyway
        if key == "additionalProperties" and free_form:
            continue  # the server keeps the whole object as it is
        if key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = structural(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key == "exclusiveMinimum":  # JSON Schema 2020 form -> OpenAPI 3.0 form
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        else:
            out[key] = value
    if "properties" in out:
        out.setdefault("type", "object")
    return out


def model_schema(model: type[BaseModel]) -> Schema:
    """The structural schema of one model, as the API server validates it."""
    return structural(model.model_json_schema(by_alias=True, mode="validation"))


def crd(info: CrdInfo) -> Schema:
    """The whole CustomResourceDefinition of one resource."""
    spec = model_schema(info.spec)
    status = model_schema(info.status)
    status.pop("description", None)
    root: Schema = {
        "type": "object",
        "description": info.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": {**status, "description": f"Observed state of the {info.kind}."},
        },
    }
    if info.rules:
        root["x-kubernetes-validations"] = info.rules
    subresources: dict[str, Any] = {"status": {}}
    if info.scale:
        subresources["scale"] = info.scale
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{info.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": info.short_names,
                "categories": ["llmloom"],
            },
            "scope": info.scope,
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": subresources,
                    "additionalPrinterColumns": info.columns,
                    **(
                        {"selectableFields": [{"jsonPath": f} for f in info.selectable]}
                        if info.selectable
                        else {}
                    ),
                }
            ],
        },
    }


HEADER = "# Generated by `python -m llmloom.crdgen crds/` from core/resources.py: do not edit.\n"


def render(info: CrdInfo) -> str:
    """The CRD of one resource as the YAML text checked into ``crds/``."""
    return HEADER + yaml.safe_dump(crd(info), sort_keys=False, width=100)


def filename(info: CrdInfo) -> str:
    """File name of one CRD inside ``crds/``."""
    return f"{GROUP}_{info.plural}.yaml"


CHART_COPY = Path("charts/llmloom/files/crds")
"""Where the chart keeps its copy (Helm reads files only from inside the chart)."""


def render_for_chart(info: CrdInfo) -> str:
    """The CRD as the chart installs it: kept when the release is uninstalled, since
    deleting a CRD deletes every flavor and job with it."""
    doc = crd(info)
    doc["metadata"]["annotations"] = {"helm.sh/resource-policy": "keep"}
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> None:
    """Write every CRD into the folder given as the first argument (default crds/), and
    the chart's copies into the folder given as the second."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "crds")
    chart = Path(args[1]) if len(args) > 1 else CHART_COPY
    for folder in (out, chart):
        folder.mkdir(parents=True, exist_ok=True)
    for info in CRDS:
        (out / filename(info)).write_text(render(info))
        (chart / filename(info)).write_text(render_for_chart(info))
        print(out / filename(info), chart / filename(info))


if __name__ == "__main__":
    main()
