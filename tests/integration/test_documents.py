"""Document jobs end to end: kubectl- and API-created LLMJobs whose documents come
inline, from ConfigMaps, Secrets and URLs, run by each strategy against the real
small model and the fault server, with progress in their status."""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import yaml
from redis import Redis

from devstack.faultserver import FaultServer
from devstack.modelserver import ModelServer
from devstack.procs import Proc, free_port
from devstack.redisserver import RedisServer

from .conftest import EXAMPLES, Api, Tenant, flavor_manifest

RELEASE_NOTES = EXAMPLES / "documents" / "release-notes.md"
REDUCE = "Merge the answers."


def paragraphs(n: int, words: int = 100) -> str:
    """n paragraphs of about ``words`` tokens: one to a chunk of 150 tokens."""
    return "\n\n".join(f"Paragraph {p}" + " word" * words + "." for p in range(n))


def document_job(name: str, flavor: str, document: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "llmloom.io/v1alpha1",
        "kind": "LLMJob",
        "metadata": {"name": name},
        "spec": {
            "flavor": flavor,
            "task": "document",
            "document": document,
            "prompt": "Summarise.",
            "reducePrompt": REDUCE,
            **spec,
        },
    }


def apply(tenant: Tenant, *objs: dict[str, Any]) -> None:
    tenant.kubectl("apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(o) for o in objs))


def finish(tenant: Tenant, name: str, condition: str = "Succeeded", timeout: int = 60) -> Any:
    tenant.kubectl(
        "wait", f"llmjob/{name}", f"--for=condition={condition}", f"--timeout={timeout}s"
    )
    return tenant.get("llmjob", name)["status"]


def stored(redis_server: RedisServer, status: dict[str, Any]) -> dict[str, Any]:
    raw = Redis.from_url(redis_server.url).get(status["result"]["key"])
    assert isinstance(raw, bytes)
    response: dict[str, Any] = json.loads(raw)["response"]
    return response


def echo_flavor(tenant: Tenant, name: str, endpoint: str, **spec: Any) -> str:
    manifest = flavor_manifest(name, endpoint, model="echo")
    manifest["spec"].update(spec)
    apply(tenant, manifest)
    return name


def failed(status: dict[str, Any]) -> dict[str, Any]:
    cond: dict[str, Any] = next(c for c in status["conditions"] if c["type"] == "Failed")
    return cond


# --------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def small_context_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    """The real small model with a context of 1,024 tokens, which long documents overflow."""
    server = ModelServer(tmp_path_factory.mktemp("small-context"), ctx=1024, parallel=1)
    yield server
    server.stop()


def test_context_overflow_switches_to_chunking_on_the_real_model(
    tenant: Tenant,
    small_context_model: ModelServer,
    start_worker: Callable[..., Proc],
    redis_server: RedisServer,
    api: Api,
) -> None:
    # The flavor does not say how large its context is: the model's own error does.
    manifest = flavor_manifest("tiny", small_context_model.url)
    manifest["spec"]["maxOutputTokens"] = 32
    apply(tenant, manifest)
    start_worker(f"{tenant.namespace}/tiny")
    text = RELEASE_NOTES.read_text() * 3  # ~1,500 tokens
    apply(tenant, document_job("notes", "tiny", {"text": text}, parameters={"temperature": 0}))
    status = finish(tenant, "notes", timeout=240)
    answer = stored(redis_server, status)
    about = answer["llmloom"]
    assert about["requested"] == "auto" and about["contextOverflow"] is True
    assert about["strategy"] == "mapReduce" and about["chunks"] >= 2
    assert about["calls"] == about["chunks"] + 1 and answer["choices"][0]["message"]["content"]
    # Usage adds up every call's, as the model counted them: at least the document.
    assert status["usage"]["promptTokens"] == answer["usage"]["prompt_tokens"] > 1500
    assert status["progress"] == {
        "done": about["calls"],
        "total": about["calls"],
        "phase": "reduce",
    }


def test_the_document_examples_run_on_the_real_model(
    tenant: Tenant,
    model_server: ModelServer,
    start_worker: Callable[..., Proc],
    redis_server: RedisServer,
    api: Api,
) -> None:
    tenant.kubectl("apply", "-f", str(EXAMPLES / "flavor-smollm2-local.yaml"))
    tenant.kubectl(
        "patch",
        "flavor",
        "smollm2",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"endpoint": model_server.url}}),
    )
    start_worker(f"{tenant.namespace}/smollm2")
    # As the example's comment says: the ConfigMap first, then the job.
    tenant.kubectl("create", "configmap", "release-notes", f"--from-file={RELEASE_NOTES}")
    jobs = {}
    for example in ("llmjob-document-configmap.yaml", "llmjob-document-mapreduce.yaml"):
        job = yaml.safe_load((EXAMPLES / example).read_text())
        job["spec"]["parameters"]["maxTokens"] = 40  # shorter answers: CPU time
        apply(tenant, job)
        jobs[job["spec"]["strategy"]] = job["metadata"]["name"]

    name = jobs["iterative"]
    status = finish(tenant, name, timeout=240)
    answer = stored(redis_server, status)
    about = answer["llmloom"]
    # Three turns of at most 250 tokens, two to a call: two calls, then the combining one.
    assert about["strategy"] == "iterative" and about["chunks"] == 3
    assert about["turnsPerBatch"] == 2 and about["calls"] == 3 and about["reduceLevels"] == 1
    assert answer["choices"][0]["message"]["content"].strip()
    row = tenant.kubectl("get", "llmjob", name, "--no-headers").split()
    assert row[:4] == [name, "smollm2", "document", "Succeeded"] and int(row[4]) > 500

    status = finish(tenant, jobs["mapReduce"], timeout=240)
    answer = stored(redis_server, status)
    about = answer["llmloom"]
    # Six paragraphs of ~80 tokens, two to a chunk of 200: three maps, one reduce.
    assert (about["chunks"], about["calls"], about["reduceLevels"]) == (3, 4, 1)
    assert answer["choices"][0]["message"]["content"].strip()
    assert status["usage"]["totalTokens"] == answer["usage"]["total_tokens"] > 467


def test_a_short_document_takes_one_call_through_the_jobs_api(
    api: Api, tenant: Tenant, smollm2: str, start_worker: Callable[..., Proc]
) -> None:
    start_worker(f"{tenant.namespace}/{smollm2}")
    tenant.kubectl(
        "patch", "flavor", smollm2, "--type=merge", "-p", '{"spec":{"contextWindow":2048}}'
    )
    auth = {"Authorization": f"Bearer {tenant.token}"}
    spec = {
        "flavor": smollm2,
        "task": "document",
        "document": {"text": "The meeting moved to Friday at noon, in room 4."},
        "prompt": "When is the meeting? Answer in a few words.",
        "parameters": {"maxTokens": 16, "temperature": 0},
    }
    created = httpx.post(f"{api.url}/v1/jobs", json={"name": "brief", "spec": spec}, headers=auth)
    assert created.status_code == 201, created.text
    with httpx.stream("GET", f"{api.url}/v1/jobs/brief/events", headers=auth, timeout=60) as ev:
        states = [
            json.loads(line[6:])["status"] for line in ev.iter_lines() if line[:6] == "data: "
        ]
    assert states[-1]["state"] == "Succeeded"
    assert states[-1]["progress"] == {"done": 1, "total": 1, "phase": "single"}
    result = httpx.get(f"{api.url}/v1/jobs/brief/result", headers=auth).json()
    response = result["response"]
    assert response["object"] == "chat.completion" and response["choices"][0]["message"]["content"]
    assert response["llmloom"]["strategy"] == "single" and response["llmloom"]["calls"] == 1
    assert response["usage"]["prompt_tokens"] == states[-1]["usage"]["promptTokens"]


def test_a_long_public_text_on_defaults_succeeds_on_the_real_model(
    api: Api,
    tenant: Tenant,
    model_server: ModelServer,
    start_worker: Callable[..., Proc],
    redis_server: RedisServer,
) -> None:
    """As a new user tries it: the example flavor of `make dev`, the GPL-3 (about 8,000
    tokens, from the machine's own licences) in a ConfigMap, mapReduce and no chunking
    settings. The flavor claims more context than a call gets (the server splits its
    context among its slots): the job cuts its chunks again to what the overflow states,
    and succeeds."""
    manifest = yaml.safe_load((EXAMPLES / "flavor-smollm2-local.yaml").read_text())
    manifest["spec"]["endpoint"] = model_server.url
    manifest["spec"]["contextWindow"] = 4096  # more than a slot of the server gives
    apply(tenant, manifest)
    start_worker(f"{tenant.namespace}/smollm2")
    tenant.kubectl(
        "create", "configmap", "gpl", "--from-file=text=/usr/share/common-licenses/GPL-3"
    )
    job = {
        "apiVersion": "llmloom.io/v1alpha1",
        "kind": "LLMJob",
        "metadata": {"name": "gpl"},
        "spec": {
            "flavor": "smollm2",
            "task": "document",
            "strategy": "mapReduce",
            "document": {"configMapKeyRef": {"name": "gpl", "key": "text"}},
            "prompt": "Summarise this part of the licence in one sentence.",
            "parameters": {"maxTokens": 48, "temperature": 0},
        },
    }
    apply(tenant, job)
    status = finish(tenant, "gpl", timeout=420)
    about = stored(redis_server, status)["llmloom"]
    assert about["documentTokens"] > 7000 and about["chunks"] >= 4
    assert about.get("contextOverflow") is True and about["contextWindow"] <= 2048


# --------------------------------------------------------------------------- the fault server


def test_map_reduce_maps_in_parallel_and_shows_its_progress(
    api: Api, tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc]
) -> None:
    # The server answers a call once two are in flight together, a quarter of a second
    # later: a worker that mapped one chunk at a time would show a peak of one, and the
    # maps take at least 8 x 0.25 s, so the throttle (a write a second at most, unit-tested
    # with a clock of its own) writes at least once while they run.
    key = f"maps-{tenant.namespace}"
    endpoint = fault_server.endpoint(f"together/{key}/2/0.25")
    paced = echo_flavor(tenant, "paced", endpoint, concurrency=2)
    start_worker(f"{tenant.namespace}/{paced}")
    auth = {"Authorization": f"Bearer {tenant.token}"}
    spec = document_job(
        "x",
        paced,
        {"text": paragraphs(16)},
        strategy="mapReduce",
        chunking={"createNewTurnAfter": 150},
    )["spec"]
    created = httpx.post(f"{api.url}/v1/jobs", json={"name": "wide", "spec": spec}, headers=auth)
    assert created.status_code == 201, created.text
    seen: list[dict[str, Any]] = []
    with httpx.stream("GET", f"{api.url}/v1/jobs/wide/events", headers=auth, timeout=120) as ev:
        for line in ev.iter_lines():
            if line.startswith("data: "):
                status = json.loads(line[6:])["status"]
                if "progress" in status:
                    seen.append(status["progress"])
    done = [p["done"] for p in seen]
    # 16 maps; their 16 answers (with labels, ~13 tokens each) overflow one reduce call
    # of 150 tokens: two reduce calls, then one.
    assert done == sorted(done) and seen[-1] == {"done": 19, "total": 19, "phase": "reduce"}
    assert any(0 < d < 16 for d in done)  # seen part way, while the chunks were mapped
    calls = httpx.get(f"{fault_server.base}/calls/{key}").json()
    assert calls == {"calls": 19, "peak": 2}  # two at a time: the flavor's concurrency
    response = httpx.get(f"{api.url}/v1/jobs/wide/result", headers=auth).json()["response"]
    assert response["choices"][0]["message"]["content"] == f"echo: {REDUCE}"
    about = response["llmloom"]
    assert (about["chunks"], about["calls"], about["reduceLevels"]) == (16, 19, 2)


def test_iterative_and_map_reduce_make_the_calls_their_settings_say(
    tenant: Tenant,
    fault_server: FaultServer,
    start_worker: Callable[..., Proc],
    redis_server: RedisServer,
    api: Api,
) -> None:
    counted = uuid.uuid4().hex
    # flaky/<key>/0 never fails, and counts its calls.
    echo = echo_flavor(tenant, "echo", fault_server.endpoint(f"flaky/{counted}/0"))
    start_worker(f"{tenant.namespace}/{echo}")
    chunks = {"createNewTurnAfter": 150, "maxNewTurns": 2, "summaryTurns": 1}
    apply(
        tenant,
        document_job(
            "rolling", echo, {"text": paragraphs(6)}, strategy="iterative", chunking=chunks
        ),
    )
    status = finish(tenant, "rolling")
    about = stored(redis_server, status)["llmloom"]
    assert (about["strategy"], about["chunks"], about["calls"]) == ("iterative", 6, 4)
    calls = httpx.get(f"{fault_server.base}/calls/{counted}").json()["calls"]
    assert calls == 4  # three batches of two turns, one combining call
    apply(
        tenant,
        document_job(
            "parts",
            echo,
            {"text": paragraphs(3)},
            strategy="mapReduce",
            chunking={"createNewTurnAfter": 150, "reduceSummary": False},
        ),
    )
    content = stored(redis_server, finish(tenant, "parts"))["choices"][0]["message"]["content"]
    assert content == "\n\n".join(f"[part {i}]\necho: Summarise." for i in (1, 2, 3))
    assert httpx.get(f"{fault_server.base}/calls/{counted}").json()["calls"] == 7


def test_context_overflow_goes_to_the_fallback_flavor_without_failing(
    tenant: Tenant,
    fault_server: FaultServer,
    start_worker: Callable[..., Proc],
    redis_server: RedisServer,
    api: Api,
) -> None:
    echo_flavor(tenant, "big", fault_server.endpoint())
    small = echo_flavor(tenant, "small", fault_server.endpoint("context/16"), fallbackFlavor="big")
    start_worker(f"{tenant.namespace}/{small}")
    apply(tenant, document_job("whole", small, {"text": paragraphs(4)}))
    status = finish(tenant, "whole")
    assert status["flavorUsed"] == "big"
    answer = stored(redis_server, status)
    assert answer["llmloom"]["strategy"] == "single"
    assert answer["choices"][0]["message"]["content"] == "echo: Summarise."
    # With no fallback and no room for any chunk, the job fails and says why.
    tiny = echo_flavor(tenant, "tiny", fault_server.endpoint("context/16"))
    start_worker(f"{tenant.namespace}/{tiny}")
    apply(tenant, document_job("hopeless", tiny, {"text": paragraphs(4)}))
    cond = failed(finish(tenant, "hopeless", "Failed"))
    assert cond["reason"] == "ContextLengthExceeded"
    assert "the model's context leaves" in cond["message"]


class _Documents(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        if self.path.startswith("/redirect/"):  # /redirect/<url>: a 302 to it
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/redirect/"))
            self.end_headers()
            return
        if self.path != "/report.txt":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def document_server() -> Iterator[str]:
    """A plain HTTP server with one document at /report.txt."""
    _Documents.body = b"Quarterly report.\n\nRevenue rose."
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Documents)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_documents_from_secrets_urls_and_missing_sources(
    tenant: Tenant,
    fault_server: FaultServer,
    start_worker: Callable[..., Proc],
    redis_server: RedisServer,
    document_server: str,
    api: Api,
) -> None:
    echo = echo_flavor(tenant, "echo", fault_server.endpoint())
    start_worker(f"{tenant.namespace}/{echo}")
    tenant.kubectl(
        "create", "secret", "generic", "memo", "--from-literal=memo.txt=Top secret memo."
    )
    tenant.kubectl("label", "secret", "memo", "llmloom.io/document=true")
    tenant.kubectl("create", "secret", "generic", "api-key", "--from-literal=key=sk-123")
    apply(
        tenant,
        document_job("from-secret", echo, {"secretKeyRef": {"name": "memo", "key": "memo.txt"}}),
        document_job("from-url", echo, {"url": f"{document_server}/report.txt"}),
        document_job("unlabelled", echo, {"secretKeyRef": {"name": "api-key", "key": "key"}}),
        document_job("no-map", echo, {"configMapKeyRef": {"name": "nope", "key": "doc"}}),
        document_job("no-page", echo, {"url": f"{document_server}/missing.txt"}),
    )
    for name in ("from-secret", "from-url"):
        status = finish(tenant, name)
        assert stored(redis_server, status)["llmloom"]["documentTokens"] > 2
    for name, reason, words in (
        ("unlabelled", "DocumentForbidden", "llmloom.io/document=true"),
        ("no-map", "DocumentNotFound", "ConfigMap 'nope' does not exist"),
        ("no-page", "DocumentNotFound", "answered 404"),
    ):
        cond = failed(finish(tenant, name, "Failed"))
        assert cond["reason"] == reason and words in cond["message"], cond


def test_document_urls_reach_public_addresses_only(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    """A worker as in a cluster (no network allowed beyond public ones): loopback, cloud
    metadata, private addresses, a redirect to metadata and other schemes are refused."""
    with _serving() as here:
        echo = echo_flavor(tenant, "echo", fault_server.endpoint())
        start_worker(f"{tenant.namespace}/{echo}", env={"LLMLOOM_DOCUMENT_ALLOWED_NETWORKS": "[]"})
        tries = {
            "loopback": f"{here}/report.txt",
            "metadata": "http://169.254.169.254/latest/meta-data/",
            "private": "http://10.0.0.1/doc.txt",
            "mapped": "http://[::ffff:169.254.169.254]/",
            "name": "http://localhost/doc.txt",
        }
        apply(tenant, *(document_job(n, echo, {"url": u}) for n, u in tries.items()))
        for name in tries:
            cond = failed(finish(tenant, name, "Failed"))
            assert cond["reason"] == "DocumentForbidden", (name, cond)
            assert "not a public address" in cond["message"], (name, cond)


def test_a_redirect_is_checked_again(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    """Loopback allowed (where the test's server is), a redirect from it to cloud metadata
    is still refused."""
    with _serving() as here:
        echo = echo_flavor(tenant, "echo", fault_server.endpoint())
        start_worker(f"{tenant.namespace}/{echo}")
        to_metadata = f"{here}/redirect/http://169.254.169.254/latest/meta-data/"
        apply(tenant, document_job("hop", echo, {"url": to_metadata}))
        cond = failed(finish(tenant, "hop", "Failed"))
        assert cond["reason"] == "DocumentForbidden" and "169.254.169.254" in cond["message"]


@contextlib.contextmanager
def _serving() -> Iterator[str]:
    _Documents.body = b"Quarterly report."
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Documents)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"task": "document", "document": {"text": "x"}},
            "a document job takes spec.document and spec.prompt",
        ),
        (
            {"task": "document", "prompt": "p", "messages": [{"role": "user", "content": "x"}]},
            "a document job takes spec.document and spec.prompt",
        ),
        (
            {"task": "document", "prompt": "p", "document": {"text": "x", "url": "http://a/b"}},
            "spec.document takes exactly one of text, configMapKeyRef, secretKeyRef and url",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "document": {"text": "x"}},
            "spec.document, prompt, reducePrompt, strategy and chunking are for task document",
        ),
        (
            {"task": "document", "prompt": "p", "document": {"text": "x"}, "stream": True},
            "a document job cannot stream",
        ),
        (
            {"task": "document", "prompt": "p", "document": {"text": "x"}, "strategy": "all"},
            'supported values: "auto", "single", "iterative", "mapReduce"',
        ),
    ],
)
def test_invalid_document_jobs_are_refused_with_a_message(
    tenant: Tenant, spec: dict[str, Any], expected: str
) -> None:
    job = {
        "apiVersion": "llmloom.io/v1alpha1",
        "kind": "LLMJob",
        "metadata": {"name": "bad"},
        "spec": {"flavor": "x", **spec},
    }
    res = tenant.cluster.kubectl(
        "apply", "-n", tenant.namespace, "-f", "-", input=yaml.safe_dump(job), check=False
    )
    assert res.returncode != 0 and expected in res.stderr, res.stderr
