"""Every endpoint of LLMLoom's front door through the official openai SDK.

Only ``base_url`` and ``api_key`` point the SDK at LLMLoom. Against ``make dev``:

    source .llmloom/dev.env && python examples/openai_tour.py

LLMLOOM_CHAT_MODEL, LLMLOOM_EMBED_MODEL and LLMLOOM_TOOLS_MODEL name the flavors
to use (``make dev``'s smollm2 on llama.cpp, minilm, and smollm2-tools on the
real Ollama, which takes tools and images, by default). Each step prints one
line; the first that fails stops the tour with the API's error.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import httpx
import openai

client = openai.OpenAI(base_url=os.environ["LLMLOOM_API_URL"], api_key=os.environ["LLMLOOM_TOKEN"])
CHAT = os.environ.get("LLMLOOM_CHAT_MODEL", "smollm2")
EMBED = os.environ.get("LLMLOOM_EMBED_MODEL", "minilm")
TOOLS = os.environ.get("LLMLOOM_TOOLS_MODEL", "smollm2-tools")
HELLO: Any = [{"role": "user", "content": "Say hello in one word."}]
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Today's weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
PIXEL = (  # a 1x1 PNG, as a data: URL
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGAAAAA"
    "EAAH2FzhVAAAAAElFTkSuQmCC"
)


def get_weather(city: str) -> str:
    return json.dumps({"city": city, "sky": "clear", "celsius": 21})


def step(name: str, detail: object) -> None:
    print(f"{name:<28} {str(detail)[:100]}")


# Models: the tenant's Ready flavors.
step("GET /v1/models", [m.id for m in client.models.list()])

# A chat completion, answered when the job finishes.
chat = client.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=8)
step("POST /v1/chat/completions", (chat.choices[0].message.content, chat.usage))

# The same, streamed: deltas as server-sent events, usage in the last chunk.
parts, usage = [], None
for chunk in client.chat.completions.create(
    model=CHAT,
    messages=HELLO,
    max_tokens=8,
    stream=True,
    stream_options={"include_usage": True},
):
    parts += [c.delta.content or "" for c in chunk.choices]
    usage = chunk.usage or usage
step("  stream=true", ("".join(parts), usage))

# Tools: the model calls one, the app runs it and sends the answer back. (A 135M model
# keeps to a call when a JSON schema holds its answer to one; a bigger one needs none.)
ask: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
call_schema: Any = {
    "type": "json_schema",
    "json_schema": {
        "name": "call",
        "schema": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": ["get_weather"]},
                "arguments": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
            "required": ["name", "arguments"],
        },
    },
}
called = client.chat.completions.create(
    model=TOOLS, messages=ask, tools=[WEATHER], response_format=call_schema, max_tokens=64
)
calls = called.choices[0].message.tool_calls or []
step("  tools", [(c.function.name, c.function.arguments) for c in calls if c.type == "function"])
history: Any = [*ask, called.choices[0].message.model_dump(exclude_none=True)]
for c in calls:
    if c.type == "function":
        args = json.loads(c.function.arguments)
        history.append({"role": "tool", "tool_call_id": c.id, "content": get_weather(**args)})
answer = client.chat.completions.create(model=TOOLS, messages=history, max_tokens=24)
step("  tool answer sent back", answer.choices[0].message.content)

# Content parts: text and an image in one message.
seen = client.chat.completions.create(
    model=TOOLS,
    messages=[
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe this picture in one word."},
                {"type": "image_url", "image_url": {"url": PIXEL}},
            ],
        }
    ],
    max_tokens=8,
)
step("  an image part", seen.choices[0].message.content)

# Text completions, and the Responses API.
text = client.completions.create(model=CHAT, prompt="Once upon a time", max_tokens=8)
step("POST /v1/completions", text.choices[0].text)
response = client.responses.create(
    model=CHAT, input="Say hello.", instructions="Answer in one word.", max_output_tokens=16
)
step("POST /v1/responses", (response.output_text, response.status))

# Embeddings: floats, and base64 (what the SDK asks for by default).
floats = client.embeddings.create(model=EMBED, input=["a cat", "a dog"], encoding_format="float")
packed = client.embeddings.create(model=EMBED, input="a bird")
step("POST /v1/embeddings", (len(floats.data), len(floats.data[0].embedding)))
step("  base64", len(packed.data[0].embedding))

# A durable task: wait 0 s, get 202 and a task id, then long-poll the task.
raw = client.chat.completions.with_raw_response.create(
    model=CHAT,
    messages=HELLO,
    max_tokens=8,
    extra_headers={"X-LLMLoom-Wait": "0"},
)
task = json.loads(raw.http_response.text)
step("  202 with a task", (raw.http_response.status_code, task["id"], task["status"]))
done = client.get(f"/tasks/{task['id']}", cast_to=httpx.Response, options={"params": {"wait": 60}})
step("GET /v1/tasks/{id}?wait=60", done.json()["status"])
slow = json.loads(
    client.chat.completions.with_raw_response.create(
        model=CHAT,
        messages=HELLO,
        max_tokens=8,
        extra_headers={"X-LLMLoom-Wait": "0"},
    ).http_response.text
)
gone = client.delete(f"/tasks/{slow['id']}", cast_to=httpx.Response)
step("DELETE /v1/tasks/{id}", gone.json())

# A document job, the same resource `kubectl apply` creates.
spec: dict[str, Any] = {
    "flavor": CHAT,
    "task": "document",
    "document": {"text": "LLMLoom runs LLM work on Kubernetes.\n\nJobs are resources."},
    "prompt": "Summarise in five words.",
    "parameters": {"maxTokens": 16},
}
created = client.post("/jobs", body={"spec": spec}, cast_to=httpx.Response).json()
step("POST /v1/jobs", (created["id"], created["status"].get("state", "Pending")))
name = created["id"]
for _ in range(120):
    job = client.get(f"/jobs/{name}", cast_to=httpx.Response).json()
    if job["status"].get("state") in ("Succeeded", "Failed"):
        break
    time.sleep(0.5)
step("GET /v1/jobs/{id}", job["status"]["state"])
step("GET /v1/jobs", len(client.get("/jobs", cast_to=httpx.Response).json()["data"]))
result = client.get(f"/jobs/{name}/result", cast_to=httpx.Response).json()
step("GET /v1/jobs/{id}/result", result["response"]["choices"][0]["message"]["content"])
events = client.get(f"/jobs/{name}/events", cast_to=httpx.Response, stream=True)
first = next(line for line in events.iter_lines() if line.startswith("data: "))
events.close()
step("GET /v1/jobs/{id}/events", json.loads(first[6:])["status"]["state"])
step("DELETE /v1/jobs/{id}", client.delete(f"/jobs/{name}", cast_to=httpx.Response).json())

# Files and a batch: the OpenAI Batch API.
lines = [
    {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions"}
    | {"body": {"model": CHAT, "messages": HELLO, "max_tokens": 8}}
    for i in range(3)
]
upload = client.files.create(
    file=("tour.jsonl", "\n".join(json.dumps(x) for x in lines).encode()), purpose="batch"
)
step("POST /v1/files", (upload.id, upload.bytes))
step("GET /v1/files", [f.id for f in client.files.list()][:3])
batch = client.batches.create(
    input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
)
step("POST /v1/batches", (batch.id, batch.status))
while batch.status not in ("completed", "failed", "expired", "cancelled"):
    time.sleep(1)
    batch = client.batches.retrieve(batch.id)
step("GET /v1/batches/{id}", (batch.status, batch.request_counts))
step("GET /v1/batches", [b.id for b in client.batches.list()][:3])
assert batch.output_file_id is not None, batch
output = client.files.content(batch.output_file_id).text.splitlines()
step("GET /v1/files/{id}/content", [json.loads(x)["custom_id"] for x in output])
cancelled = client.batches.create(
    input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
)
step("POST /v1/batches/{id}/cancel", client.batches.cancel(cancelled.id).status)
step("DELETE /v1/files/{id}", client.files.delete(upload.id).deleted)

# Usage and limits of the tenant.
step("GET /v1/usage", client.get("/usage", cast_to=httpx.Response).json())

# Errors come in OpenAI's envelope, as the SDK's exceptions.
try:
    client.chat.completions.create(model="no-such-model", messages=HELLO)
except openai.NotFoundError as exc:
    step("unknown model", (exc.status_code, exc.code))
print("tour complete")
