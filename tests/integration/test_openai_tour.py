"""examples/openai_tour.py, run unchanged against the API: every endpoint through the SDK."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable

from devstack.ollama import TOOLS_MODEL, RealOllama
from devstack.procs import Proc

from .conftest import EXAMPLES, Api, Tenant
from .test_embeddings import minilm
from .test_ollama_wire import apply, ollama_flavor

__all__ = ["minilm"]  # the fixture, used by name


def test_the_sdk_tour_runs_every_endpoint(
    api: Api,
    tenant: Tenant,
    smollm2: str,
    minilm: str,
    real_ollama: RealOllama,
    start_worker: Callable[..., Proc],
) -> None:
    apply(tenant, ollama_flavor("smollm2-tools", real_ollama.url, TOOLS_MODEL))
    start_worker(f"{tenant.namespace}/{smollm2}", f"{tenant.namespace}/smollm2-tools")
    for flavor in (smollm2, minilm, "smollm2-tools"):  # /v1/models lists Ready flavors
        tenant.kubectl("wait", f"flavor/{flavor}", "--for=condition=Ready", "--timeout=90s")
    env = {
        "LLMLOOM_API_URL": f"{api.url}/v1",
        "LLMLOOM_TOKEN": tenant.token,
        "LLMLOOM_CHAT_MODEL": smollm2,
        "LLMLOOM_EMBED_MODEL": minilm,
        "LLMLOOM_TOOLS_MODEL": "smollm2-tools",
        "PATH": "/usr/bin:/bin",
    }
    tour = subprocess.run(
        [sys.executable, str(EXAMPLES / "openai_tour.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert tour.returncode == 0, tour.stdout + tour.stderr
    lines = {line[:28].strip(): line[28:].strip() for line in tour.stdout.splitlines()}
    assert set(ast.literal_eval(lines["GET /v1/models"])) == {minilm, smollm2, "smollm2-tools"}
    assert ast.literal_eval(lines["tools"])[0][0] == "get_weather"
    assert lines["tool answer sent back"] and lines["an image part"]
    assert lines["POST /v1/completions"] and lines["POST /v1/responses"].startswith("(")
    assert lines["202 with a task"].startswith("(202, ")
    assert lines["GET /v1/tasks/{id}?wait=60"] == "succeeded"
    assert lines["GET /v1/jobs/{id}"] == "Succeeded"
    assert lines["GET /v1/batches/{id}"].startswith("('completed'")
    assert lines["GET /v1/files/{id}/content"] == "['r0', 'r1', 'r2']"
    assert lines["unknown model"] == "(404, 'model_not_found')"
    assert tour.stdout.rstrip().endswith("tour complete")
