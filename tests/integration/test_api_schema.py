"""The API against its own OpenAPI document, fuzzed by schemathesis.

Every documented operation gets generated requests, valid and invalid (malformed
JSON, wrong types, unknown fields, missing or bad tokens, other methods), with a
valid tenant token. None may answer 500, and every answer must be one the
document declares, with the declared content type, headers and body schema.
The run is deterministic (a fixed seed) and bounded.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
import yaml
from schemathesis.engine import events

from devstack.cluster import Cluster
from devstack.embedserver import EmbedServer
from devstack.faultserver import FaultServer
from devstack.procs import Proc
from devstack.stack import create_token

from .conftest import EXAMPLES, Api, Tenant, flavor_manifest

SEED = 20261122


def config(api: Api, token: str) -> schemathesis.Config:
    """A bounded, deterministic run, with the tenant's token on every request."""
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": api.url,
            "headers": {"Authorization": f"Bearer {token}"},
            "generation": {"mode": "all", "max-examples": 12, "no-shrink": True},
            "phases": {
                "examples": {"enabled": False},  # the document has none
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "checks": {
                # A valid request may name a model, task or job that does not exist: the
                # document promises shapes, not objects.
                "positive_data_acceptance": {"enabled": False},
                # Invalid requests are refused as OpenAI refuses them; an oversized one is 413.
                "negative_data_rejection": {
                    "expected-statuses": ["400", "401", "404", "405", "413"]
                },
                "use_after_free": {"enabled": False},
                "ensure_resource_availability": {"enabled": False},
            },
            "request-timeout": 30,
            "workers": 1,
        }
    )


@pytest.fixture(scope="module")
def fuzzed(
    cluster: Cluster, fault_server: FaultServer, embed_server: EmbedServer
) -> Iterator[Tenant]:
    """A tenant of its own, with a chat flavor ("echo", answered at once by the fault
    server) and an embeddings flavor ("minilm", a real small model)."""
    name = f"t-schema-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)

    token = create_token(cluster.kubeconfig, name, "schemathesis")
    tenant = Tenant(namespace=name, token=token, cluster=cluster)
    manifest = flavor_manifest("echo", fault_server.endpoint(), "echo")
    tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    minilm = yaml.safe_load((EXAMPLES / "flavor-minilm-local.yaml").read_text())
    minilm["spec"]["endpoint"] = embed_server.url
    tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(minilm))
    yield tenant
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


MODELS = {"/v1/chat/completions": "echo", "/v1/embeddings": "minilm"}


def steer(_: Any, case: Any) -> Any:
    """Send half the valid requests that name a model or flavor to the one that exists, so
    that jobs are created and answered, not only refused."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return case
    body = case.body
    if not isinstance(body, dict):
        return case
    model = body.get("model")
    if case.path in MODELS and isinstance(model, str) and len(model) % 2 == 0:
        body["model"] = MODELS[case.path]
        if case.path == "/v1/embeddings" and not isinstance(body.get("input"), str):
            # Token arrays and empty lists are valid to the document but the model server
            # refuses them (its 400 comes back): one text reaches the model for sure.
            body["input"] = "a steered text"
    elif case.path == "/v1/jobs" and len(str(body.get("name"))) % 2 == 0:
        body["spec"] = {"flavor": "echo", "messages": [{"role": "user", "content": "hi"}]}
    return case


def test_the_api_keeps_to_its_openapi_document(
    api: Api, fuzzed: Tenant, start_worker: Callable[..., Proc]
) -> None:
    start_worker(f"{fuzzed.namespace}/echo", f"{fuzzed.namespace}/minilm")
    schema = schemathesis.openapi.from_url(
        f"{api.url}/openapi.json", config=config(api, fuzzed.token)
    )
    schema.hook("map_case")(steer)
    documented = {
        f"{method.upper()} {path}"
        for path, operations in schema.raw_schema["paths"].items()
        for method in operations
    }
    tested: set[str] = set()
    answered: set[tuple[str, int]] = set()
    failures: dict[tuple[str, str], str] = {}
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            tested.add(event.recorder.label)
            answered |= {
                (event.recorder.label, i.response.status_code)
                for i in event.recorder.interactions.values()
                if i.response is not None
            }
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        failures.setdefault(
                            (event.recorder.label, failure.title),
                            f"{failure.message}\n{check.failure_info.code_sample}",
                        )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            failures.setdefault(("error", str(event)), repr(event))
    report = "\n\n".join(f"{label}: {title}\n{text}" for (label, title), text in failures.items())
    assert not failures, report
    assert tested == documented
    # The steered requests reached a model: answers, not only refusals, were checked.
    wanted = {
        ("POST /v1/chat/completions", 200),
        ("POST /v1/embeddings", 200),
        ("POST /v1/jobs", 201),
    }
    assert wanted <= answered, sorted(a for a in answered if a[0] in {w[0] for w in wanted})
