"""Run examples/batch/requests.jsonl as an OpenAI batch against LLMLoom.

source .llmloom/dev.env && python examples/batch/run.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import openai

client = openai.OpenAI(base_url=os.environ["LLMLOOM_API_URL"], api_key=os.environ["LLMLOOM_TOKEN"])
requests = Path(__file__).with_name("requests.jsonl")
upload = client.files.create(file=requests.open("rb"), purpose="batch")
batch = client.batches.create(
    input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
)
print(batch.id, batch.status)
while batch.status not in ("completed", "failed", "expired", "cancelled"):
    time.sleep(2)
    batch = client.batches.retrieve(batch.id)
    print(batch.status, batch.request_counts)
if batch.status == "failed" and batch.errors:
    sys.exit("\n".join(f"line {e.line}: {e.message}" for e in batch.errors.data or []))
for file_id in (batch.output_file_id, batch.error_file_id):
    if file_id:
        for line in client.files.content(file_id).text.splitlines():
            item = json.loads(line)
            print(item["custom_id"], json.dumps(item["response"] or item["error"])[:200])
