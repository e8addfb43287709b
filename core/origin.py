"""Who made a job, as its ``llmloom.io/origin`` label says, and what follows from it.

- no label: a person (kubectl, GitOps): the operator admits and enqueues the
  job, records Accepted, posts Accepted and Completed Events, and keeps it;
- ``api``: made through ``POST /v1/jobs``: the API admitted it (rate limits,
  budget) and enqueued it; kept, as a person's;
- ``request``: made by the API for one OpenAI request (chat, completions,
  responses, embeddings): the request is stored by reference, the API
  enqueues the job with its spec, the worker is the one writer of its status,
  the operator writes nothing unless something goes wrong, and the job is
  deleted soon after its answer was delivered (``ttlSecondsAfterFinished``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LABEL = "llmloom.io/origin"
API = "api"
REQUEST = "request"


def of(meta: Mapping[str, Any]) -> str | None:
    """The origin of a job, by its metadata."""
    value = (meta.get("labels") or {}).get(LABEL)
    return str(value) if value else None


def is_request(meta: Mapping[str, Any]) -> bool:
    """Whether the job was made for one OpenAI request."""
    return of(meta) == REQUEST


def admitted_by_api(meta: Mapping[str, Any]) -> bool:
    """Whether the API admitted the job (and holds an admission charge for it)."""
    return of(meta) in (API, REQUEST)


def routine_events(meta: Mapping[str, Any]) -> bool:
    """Whether a job gets routine Events (Accepted, Completed): only a person's. For the
    API's jobs they would be writes to etcd telling nobody anything the HTTP answer and
    the job's status do not."""
    return of(meta) is None
