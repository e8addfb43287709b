"""Document jobs: one instruction applied to a long document, by strategy.

The document (inline, a ConfigMap or Secret key, or a URL) is cut into turns of
``chunking.createNewTurnAfter`` tokens at paragraph and sentence boundaries
(``llmloom.chunking``), then:

- ``single``: one call with the whole document;
- ``mapReduce``: one call per chunk, in parallel up to the flavor's
  ``concurrency``, then the answers combined with ``reducePrompt`` in calls
  that each read at most a chunk's worth of answers, level after level until
  one answer is left;
- ``iterative``: the turns in order, ``maxNewTurns`` to a call, each call
  carrying the answers of the ``summaryTurns`` calls before it; then combined
  as in mapReduce;
- ``auto``: single when the document fits the flavor's ``contextWindow`` (or
  the window is unknown), else the fallbackFlavor when it holds it, else
  mapReduce; a context overflow reported by the provider switches to
  mapReduce, with chunks sized from the context its error states, instead of
  failing the job.

Every call goes through ``llmloom.worker.calls.complete``: retries, failover
and fallback as for a chat job. Usage is summed over the calls; the result is a
chat completion whose ``llmloom`` key says how it was made. Progress goes into
``status.progress`` at most about once a second. Cutting and counting run in a
thread: a large document takes seconds of CPU, which must not hold up the
worker's other jobs or its lease renewals.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import aiohttp
import tiktoken
from yarl import URL

from llmloom import chunking, httpio, tokens
from llmloom.kube import LLMJOBS, SECRETS, Resource
from llmloom.resources import Chunking, Flavor, LLMJob, Message, Progress, ProgressPhase, Usage
from llmloom.worker.bodies import messages_call
from llmloom.worker.calls import Answer, complete, find_flavor, load_flavor
from llmloom.worker.deps import Deps, JobFailed
from llmloom.worker.egress import DocumentClient, Forbidden

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

CONFIGMAPS = Resource("", "v1", "configmaps")
DOCUMENT_LABEL = "llmloom.io/document"
"""A Secret is read as a document only when it carries this label with value "true": a
job's author must not be able to read, say, the flavor's API key through a job."""
MAX_DOCUMENT_BYTES = 32 * 1024 * 1024
"""Largest document fetched from a URL."""
FETCH_SECONDS = 60.0
FETCH_ATTEMPTS = 3
DEFAULT_OUTPUT_TOKENS = 1024
"""Room kept for each answer when neither parameters.maxTokens nor the flavor's
maxOutputTokens bounds it."""
CONTEXT_SHARE = 0.9
"""Share of the flavor's contextWindow that chunks may fill: the flavor's tokenizer
(tiktoken) and the model's own can count the same text differently."""
FRAME_TOKENS = 96
"""Tokens of the framing around the document in each call (system message, labels,
the per-message tokens of the chat format)."""
MIN_CHUNK_TOKENS = 32
PROGRESS_SECONDS = 1.0
"""Least time between two progress writes of one job."""
CONTEXT_OVERFLOW = "ContextLengthExceeded"

DEFAULT_REDUCE_PROMPT = (
    "Combine the answers above, each for consecutive parts of one document, into a single "
    "answer to the original instruction. Keep every point that matters; drop repetition."
)
SINGLE_SYSTEM = "The user sends a document, then an instruction about it. Follow the instruction."
MAP_SYSTEM = (
    "The user sends part {i} of {n} of a long document, then an instruction. Follow the "
    "instruction for this part alone; the answers for all parts are combined later."
)
ITERATE_SYSTEM = (
    "The user sends a long document in order, a few parts at a time (now parts {a} to {b} "
    "of {n}), then an instruction. Follow the instruction for these parts."
)
CARRIED = "For context, your answers for the earlier parts:"
REDUCE_SYSTEM = (
    "A long document was processed in parts with this instruction:\n\n{prompt}\n\n"
    "The user sends the answers for consecutive parts, in order, then an instruction for "
    "combining them."
)

Resolved = Literal["single", "iterative", "mapReduce"]


# --------------------------------------------------------------------------- planning


def output_tokens(job: LLMJob, flavor: Flavor) -> int:
    """Tokens kept free for each answer: parameters.maxTokens, capped by the flavor."""
    asked = job.spec.parameters.max_tokens if job.spec.parameters else None
    bounds = [b for b in (asked, flavor.spec.max_output_tokens) if b]
    return min(bounds) if bounds else DEFAULT_OUTPUT_TOKENS


def input_budget(window: int | None, output: int, instruction_tokens: int) -> int | None:
    """Tokens of document (or of answers) one call may carry besides its instruction and
    framing, in a context of ``window`` tokens; None when that is unknown."""
    if window is None:
        return None
    return int(window * CONTEXT_SHARE) - output - instruction_tokens - FRAME_TOKENS


_WINDOW_IN_ERROR = re.compile(
    r"(?:context length is|context size \(|context window of)\s*(\d+)", re.IGNORECASE
)


def window_from_error(message: str) -> int | None:
    """The context size a provider states in its overflow error (vLLM and OpenAI: "maximum
    context length is N tokens", llama.cpp: "available context size (N tokens)")."""
    found = _WINDOW_IN_ERROR.search(message)
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class Plan:
    """How a document is processed."""

    strategy: Resolved
    chunk_tokens: int
    """Tokens per chunk (turn); for single, the chunks it would fall back to (a context
    overflow under auto)."""
    turns_per_batch: int = 1
    """iterative: turns in one call."""
    on_fallback: bool = False
    """single: start on the fallbackFlavor (the document does not fit the primary)."""


def bounded(wanted: int, budget: int | None, what: str) -> int:
    """``wanted`` tokens, or fewer to fit ``budget``; fails when too few are left."""
    size = wanted if budget is None else min(wanted, budget)
    if size < MIN_CHUNK_TOKENS:
        raise JobFailed(
            CONTEXT_OVERFLOW,
            f"the model's context leaves {budget} tokens for {what} after the instruction "
            "and the room for the answer; lower parameters.maxTokens, or use a flavor with a "
            "larger context",
            400,
        )
    return size


def plan(
    requested: str,
    document_tokens: int,
    chunks: Chunking,
    budget: int | None,
    output: int,
    fallback_budget: int | None = None,
    has_fallback: bool = False,
) -> Plan:
    """The strategy for a document, and its chunk sizes.

    Args:
        requested: spec.strategy (auto when unset).
        document_tokens: the document's length.
        chunks: spec.chunking.
        budget: tokens of document one call on the job's flavor may carry (None: unknown).
        output: tokens kept for each answer.
        fallback_budget: the same for the fallbackFlavor.
        has_fallback: the flavor names a fallbackFlavor that exists.
    """
    if requested == "iterative":
        # Each call carries up to summaryTurns earlier answers besides its turns.
        room = None if budget is None else budget - chunks.summary_turns * output
        turn = bounded(chunks.create_new_turn_after, room, "a turn")
        per_batch = chunks.max_new_turns if room is None else max(1, room // turn)
        return Plan("iterative", turn, min(chunks.max_new_turns, per_batch))
    chunk = (
        chunks.create_new_turn_after
        if budget is None
        else min(chunks.create_new_turn_after, budget)
    )
    if requested == "mapReduce":
        return Plan("mapReduce", bounded(chunks.create_new_turn_after, budget, "a chunk"))
    if requested == "single" or budget is None or document_tokens <= budget:
        return Plan("single", chunk)
    if has_fallback and (fallback_budget is None or document_tokens <= fallback_budget):
        return Plan("single", chunk, on_fallback=True)
    return Plan("mapReduce", bounded(chunks.create_new_turn_after, budget, "a chunk"))


def reduce_estimate(parts: int, part_tokens: int, budget: int) -> int:
    """Reduce calls needed to combine ``parts`` answers of about ``part_tokens`` each,
    when one call reads at most ``budget`` tokens of them (for progress totals)."""
    calls = 0
    while parts > 1:
        groups = chunking.group_by_budget([part_tokens] * parts, budget, lambda k: k * LABEL_TOKENS)
        calls += sum(1 for g in groups if len(g) > 1)
        parts = len(groups)
    return calls


def batches(turns: int, per_batch: int) -> list[range]:
    """Consecutive turns, ``per_batch`` to a call."""
    return [range(i, min(i + per_batch, turns)) for i in range(0, turns, per_batch)]


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Part:
    """An answer for some consecutive parts of the document."""

    first: int
    """1-based number of the first part it covers."""
    last: int
    text: str
    tokens: int

    @property
    def label(self) -> str:
        return (
            f"part {self.first}" if self.first == self.last else f"parts {self.first}-{self.last}"
        )


def _msg(role: Literal["system", "user"], content: str) -> Message:
    return Message(role=role, content=content)


def single_messages(text: str, prompt: str) -> list[Message]:
    """The whole document in one call; the instruction comes last, after the document."""
    return [_msg("system", SINGLE_SYSTEM), _msg("user", text), _msg("user", prompt)]


def map_messages(text: str, number: int, total: int, prompt: str) -> list[Message]:
    """One chunk of ``total``."""
    return [
        _msg("system", MAP_SYSTEM.format(i=number, n=total)),
        _msg("user", text),
        _msg("user", prompt),
    ]


def iterate_messages(
    turns: Sequence[str], first: int, total: int, carried: Sequence[Part], prompt: str
) -> list[Message]:
    """One batch of turns (``first`` is the 1-based number of its first), each turn a
    message, after the answers carried from the batches before it."""
    out = [_msg("system", ITERATE_SYSTEM.format(a=first, b=first + len(turns) - 1, n=total))]
    if carried:
        out.append(
            _msg("user", "\n\n".join([CARRIED, *(f"[{p.label}]\n{p.text}" for p in carried)]))
        )
    out.extend(_msg("user", t) for t in turns)
    out.append(_msg("user", prompt))
    return out


def reduce_messages(parts: Sequence[Part], prompt: str, reduce_prompt: str) -> list[Message]:
    """Answers for consecutive parts, to be combined."""
    return [
        _msg("system", REDUCE_SYSTEM.format(prompt=prompt)),
        _msg("user", "\n\n".join(f"[{p.label}]\n{p.text}" for p in parts)),
        _msg("user", reduce_prompt),
    ]


def joined(parts: Sequence[Part]) -> str:
    """Answers for the parts in order, without a combining call (reduceSummary false)."""
    if len(parts) == 1:
        return parts[0].text
    return "\n\n".join(f"[{p.label}]\n{p.text}" for p in parts)


# --------------------------------------------------------------------------- running


Call = Callable[[list[Message], Flavor], Awaitable[Answer]]
"""One chat call on a flavor, with retries, failover and fallback."""
Report = Callable[[Progress], None]


async def bounded_map(
    fn: Callable[[int, T], Awaitable[R]], items: Sequence[T], limit: int
) -> list[R]:
    """``fn`` over the items, at most ``limit`` at a time, started in order; results in
    order. The first failure cancels the calls still running and is raised as is."""
    results: dict[int, R] = {}
    todo = iter(enumerate(items))

    async def lane() -> None:
        for i, item in todo:  # the lanes share one iterator: each item runs once
            results[i] = await fn(i, item)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, min(limit, len(items)))):
                group.create_task(lane())
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [results[i] for i in range(len(items))]


@dataclass
class Session:
    """The calls of one document job: answers, usage, time and progress."""

    job: LLMJob
    primary: Flavor
    call: Call
    report: Report
    enc: tiktoken.Encoding
    clock: Callable[[], float] = time.monotonic
    answers: list[Answer] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)
    done: int = 0
    total: int = 0
    phase: ProgressPhase = "single"

    def plan_calls(self, total: int, phase: ProgressPhase | None = None) -> None:
        """Revise the number of calls planned (and the phase), and report it."""
        self.total = max(total, self.done)
        self.phase = phase or self.phase
        self.report(Progress(done=self.done, total=self.total, phase=self.phase))

    async def ask(self, messages: list[Message], flavor: Flavor | None = None) -> Answer:
        started = self.clock()
        try:
            got = await self.call(messages, flavor or self.primary)
        finally:
            self.spans.append((started, self.clock()))
        self.answers.append(got)
        self.done += 1
        self.report(Progress(done=self.done, total=max(self.total, self.done), phase=self.phase))
        return got

    def part(self, got: Answer, first: int, last: int) -> Part:
        text = content_of(got)
        return Part(first, last, text, chunking.count(text, self.enc))

    def busy_ms(self) -> float:
        """Time during which at least one call was in flight."""
        busy, end = 0.0, float("-inf")
        for a, b in sorted(self.spans):
            if b > end:
                busy += b - max(a, end)
                end = b
        return busy * 1000


def content_of(got: Answer) -> str:
    return str(got.response["choices"][0]["message"].get("content") or "")


LABEL_TOKENS = 8
"""Tokens of the label before each answer in a reduce call ("[parts 3-4]")."""


async def reduce_parts(
    s: Session, parts: list[Part], prompt: str, reduce_prompt: str, budget: int, limit: int
) -> tuple[str, int]:
    """Combine the answers level by level until one is left.

    Returns:
        The final answer and the number of levels it took.
    """
    levels = 0
    while len(parts) > 1:
        parts = await _reduce_level(s, parts, prompt, reduce_prompt, budget, limit)
        levels += 1
    return parts[0].text, levels


async def _reduce_level(
    s: Session, parts: list[Part], prompt: str, reduce_prompt: str, budget: int, limit: int
) -> list[Part]:
    groups = chunking.group_by_budget([p.tokens for p in parts], budget, lambda k: k * LABEL_TOKENS)
    calls = sum(1 for g in groups if len(g) > 1)
    # This level's calls, and an estimate for the levels after it.
    later = reduce_estimate(len(groups), max(p.tokens for p in parts), budget)
    s.plan_calls(s.done + calls + later, "reduce")

    async def combine(_: int, group: range) -> Part:
        members = [parts[i] for i in group]
        if len(members) == 1:
            return members[0]  # nothing to combine it with at this level
        got = await s.ask(reduce_messages(members, prompt, reduce_prompt))
        return s.part(got, members[0].first, members[-1].last)

    return await bounded_map(combine, groups, limit)


def _with_hint(exc: JobFailed, chunk_tokens: int) -> JobFailed:
    if exc.reason != CONTEXT_OVERFLOW:
        return exc
    return JobFailed(
        exc.reason,
        f"{exc.message} (one call carried up to {chunk_tokens} tokens of the document: lower "
        "spec.chunking.createNewTurnAfter, or set the flavor's contextWindow)",
        exc.status_code,
    )


async def run(
    s: Session,
    text: str,
    document_tokens: int | None,
    fallback: Flavor | None,
) -> tuple[str, dict[str, Any]]:
    """Process the document by its strategy.

    Args:
        document_tokens: the document's length, if counted already (a strategy that
            chunks anyway needs no count of the whole).

    Returns:
        The final answer and what to tell about how it was made.
    """
    spec, primary = s.job.spec, s.primary
    window = primary.spec.context_window
    prompt = spec.prompt or ""
    requested = spec.strategy or "auto"
    chunks_spec = spec.chunking or Chunking()
    if document_tokens is None and requested in ("auto", "single"):
        # In a thread, as the cutting below: a large document takes seconds of CPU, which
        # must not hold up the other jobs of this worker, or its lease renewals.
        document_tokens = await asyncio.to_thread(chunking.count, text, s.enc)
    output = output_tokens(s.job, primary)
    prompt_tokens = chunking.count(prompt, s.enc)
    budget = input_budget(primary.spec.context_window, output, prompt_tokens)
    fb_budget = (
        input_budget(fallback.spec.context_window, output, prompt_tokens) if fallback else None
    )
    chosen = plan(
        requested, document_tokens or 0, chunks_spec, budget, output, fb_budget, bool(fallback)
    )
    about: dict[str, Any] = {"strategy": chosen.strategy, "requested": requested}
    if chosen.strategy == "single":
        s.plan_calls(1, "single")
        try:
            got = await s.ask(
                single_messages(text, prompt), fallback if chosen.on_fallback else None
            )
            return content_of(got), about | {"chunks": 1, "documentTokens": document_tokens}
        except JobFailed as exc:
            if exc.reason != CONTEXT_OVERFLOW or requested != "auto":
                raise
            # The provider knows its context better than contextWindow (or it was unset);
            # the size its error states, if any, bounds the chunks.
            stated = window_from_error(exc.message)
            if stated is not None:
                window = stated if window is None else min(window, stated)
                budget = input_budget(window, output, prompt_tokens)
            log.info("document of job %s overflowed one call; chunking it", s.job.metadata.name)
            about |= {"strategy": "mapReduce", "contextOverflow": True}
            chosen = Plan(
                "mapReduce", bounded(chunks_spec.create_new_turn_after, budget, "a chunk")
            )

    recut = True  # once: from the window an overflow error states
    while True:
        try:
            return await _chunked(s, text, document_tokens, chosen, window, prompt, about)
        except JobFailed as exc:
            stated = window_from_error(exc.message) if exc.reason == CONTEXT_OVERFLOW else None
            smaller = stated is not None and (window is None or stated < window)
            if not recut or stated is None or not smaller:
                raise _with_hint(exc, chosen.chunk_tokens) from exc
            # The server gives less than contextWindow says (llama.cpp splits its context
            # among its parallel slots, say): cut again, to the size its error states.
            try:
                replanned = plan(
                    chosen.strategy,
                    document_tokens or 0,
                    chunks_spec,
                    input_budget(stated, output, prompt_tokens),
                    output,
                )
            except JobFailed:
                raise _with_hint(exc, chosen.chunk_tokens) from exc
            log.info(
                "a call of job %s overflowed a context of %d tokens; cutting again",
                s.job.metadata.name,
                stated,
            )
            recut, window, chosen = False, stated, replanned
            about |= {"contextOverflow": True, "contextWindow": stated}


async def _chunked(
    s: Session,
    text: str,
    document_tokens: int | None,
    chosen: Plan,
    window: int | None,
    prompt: str,
    about: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    """The document cut to ``chosen``'s chunks and run as mapReduce or iterative, the
    answers combined."""
    spec = s.job.spec
    chunks_spec = spec.chunking or Chunking()
    reduce_prompt = spec.reduce_prompt or DEFAULT_REDUCE_PROMPT
    output = output_tokens(s.job, s.primary)
    prompt_tokens = chunking.count(prompt, s.enc)
    reduce_budget = bounded(
        chunks_spec.create_new_turn_after,
        input_budget(window, output, prompt_tokens + chunking.count(reduce_prompt, s.enc)),
        "the answers to combine",
    )
    cutting = time.monotonic()
    pieces = await asyncio.to_thread(chunking.split, text, chosen.chunk_tokens, s.enc)
    n, limit = len(pieces), s.primary.spec.concurrency
    about |= {
        "chunks": n,
        "chunkTokens": chosen.chunk_tokens,
        "documentTokens": document_tokens or sum(c.tokens for c in pieces),
        "timings": {"chunkMs": round((time.monotonic() - cutting) * 1000, 1)},
    }
    reduce = chunks_spec.reduce_summary
    if chosen.strategy == "mapReduce":
        later = reduce_estimate(n, output, reduce_budget) if reduce else 0
        s.plan_calls(n + later, "map")

        async def map_one(i: int, piece: chunking.Chunk) -> Part:
            got = await s.ask(map_messages(piece.text, i + 1, n, prompt))
            return s.part(got, i + 1, i + 1)

        parts = await bounded_map(map_one, pieces, limit)
    else:
        runs = batches(n, chosen.turns_per_batch)
        later = reduce_estimate(len(runs), output, reduce_budget) if reduce else 0
        s.plan_calls(len(runs) + later, "iterate")
        about["turnsPerBatch"] = chosen.turns_per_batch
        parts = []
        for batch in runs:
            carried = parts[-chunks_spec.summary_turns :] if chunks_spec.summary_turns else []
            turns = [pieces[i].text for i in batch]
            got = await s.ask(iterate_messages(turns, batch.start + 1, n, carried, prompt))
            parts.append(s.part(got, batch.start + 1, batch.stop))
    if not reduce:
        return joined(parts), about
    final, levels = await reduce_parts(s, parts, prompt, reduce_prompt, reduce_budget, limit)
    return final, about | {"reduceLevels": levels}


def summed(usages: Sequence[Usage]) -> Usage:
    """Usage of many calls: tokens and costs added up."""
    prompt = sum(u.prompt_tokens for u in usages)
    completion = sum(u.completion_tokens for u in usages)
    costs = [u.cost for u in usages if u.cost is not None]
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost=round(sum(costs), 8) if costs else None,
    )


def response(text: str, s: Session, about: dict[str, Any]) -> dict[str, Any]:
    """The job's result: a chat completion with the final answer and summed usage."""
    last = s.answers[-1].response if s.answers else {}
    finishes = [str(a.response["choices"][0].get("finish_reason") or "stop") for a in s.answers]
    usage = summed([a.usage for a in s.answers])
    return {
        "id": f"chatcmpl-doc-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": last.get("model") or s.primary.spec.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length" if "length" in finishes else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
        "llmloom": about
        | {"calls": len(s.answers), "flavors": sorted({a.flavor for a in s.answers})},
    }


# --------------------------------------------------------------------------- input


def _fail(reason: str, message: str, code: int) -> JobFailed:
    return JobFailed(reason, message, code)


async def load_document(deps: Deps, job: LLMJob) -> str:
    """The document's text, from wherever spec.document says."""
    src, ns = job.spec.document, job.metadata.namespace
    if src is None:
        raise _fail("DocumentMissing", "a document job needs spec.document", 400)
    if src.text is not None:
        text = src.text
    elif src.config_map_key_ref is not None:
        ref = src.config_map_key_ref
        obj = await deps.kube.find(CONFIGMAPS, ns, ref.name)
        if obj is None:
            raise _fail("DocumentNotFound", f"ConfigMap {ref.name!r} does not exist", 404)
        if ref.key in obj.get("data", {}):
            text = obj["data"][ref.key]
        elif ref.key in obj.get("binaryData", {}):
            text = _utf8(base64.b64decode(obj["binaryData"][ref.key]), f"ConfigMap {ref.name!r}")
        else:
            raise _fail("DocumentNotFound", f"ConfigMap {ref.name!r} has no key {ref.key!r}", 404)
    elif src.secret_key_ref is not None:
        ref = src.secret_key_ref
        obj = await deps.kube.find(SECRETS, ns, ref.name)
        if obj is None:
            raise _fail("DocumentNotFound", f"Secret {ref.name!r} does not exist", 404)
        if obj["metadata"].get("labels", {}).get(DOCUMENT_LABEL) != "true":
            raise _fail(
                "DocumentForbidden",
                f"Secret {ref.name!r} is not labelled {DOCUMENT_LABEL}=true, which a Secret "
                "must be to be read as a document",
                403,
            )
        if ref.key not in obj.get("data", {}):
            raise _fail("DocumentNotFound", f"Secret {ref.name!r} has no key {ref.key!r}", 404)
        text = _utf8(base64.b64decode(obj["data"][ref.key]), f"Secret {ref.name!r}")
    elif src.url is not None:
        text = await fetch(deps.document_client(), src.url)
    else:
        raise _fail("DocumentMissing", "spec.document names no source", 400)
    if not text.strip():
        raise _fail("DocumentEmpty", "the document is empty", 400)
    return text


def _utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail("DocumentInvalid", f"{where}: the document is not UTF-8 text", 400) from exc


MAX_REDIRECTS = 5


async def fetch(client: DocumentClient, url: str) -> str:
    """A document from an http(s) URL at a public address (``egress``): redirects followed
    (each hop checked), transport errors and 5xx retried, size bounded."""
    for attempt in range(FETCH_ATTEMPTS):
        try:
            async with _get(client, url) as resp:
                if resp.status < 400:
                    body = bytearray()
                    async for part in resp.content.iter_any():
                        body += part
                        if len(body) > MAX_DOCUMENT_BYTES:
                            raise _fail(
                                "DocumentTooLarge",
                                f"{url} is larger than {MAX_DOCUMENT_BYTES} bytes",
                                413,
                            )
                    charset = resp.charset or "utf-8"
                    try:
                        return bytes(body).decode(charset)
                    except (LookupError, UnicodeDecodeError) as exc:
                        raise _fail("DocumentInvalid", f"{url}: not {charset} text", 400) from exc
                if resp.status < 500 or attempt == FETCH_ATTEMPTS - 1:
                    reason = "DocumentNotFound" if resp.status == 404 else "DocumentUnavailable"
                    raise _fail(reason, f"GET {url} answered {resp.status}", 502)
        except (*httpio.TIMEOUT_ERRORS, *httpio.TRANSPORT_ERRORS) as exc:
            if attempt == FETCH_ATTEMPTS - 1:
                raise _fail("DocumentUnavailable", f"GET {url}: {exc!r}", 502) from exc
        await asyncio.sleep(2**attempt)
    raise RuntimeError("unreachable: the last attempt returns or raises")


@contextlib.asynccontextmanager
async def _get(client: DocumentClient, url: str) -> AsyncIterator[aiohttp.ClientResponse]:
    """GET a URL, following up to MAX_REDIRECTS redirects by hand, each hop checked."""
    for _ in range(MAX_REDIRECTS + 1):
        try:
            await client.check(url)
        except Forbidden as exc:
            raise _fail("DocumentForbidden", str(exc), 403) from exc
        resp = await client.http.get(
            url, timeout=httpio.timeout(FETCH_SECONDS), allow_redirects=False
        )
        location = resp.headers.get("Location")
        if resp.status in (301, 302, 303, 307, 308) and location:
            resp.release()
            url = str(resp.url.join(URL(location)))
            continue
        try:
            yield resp
        finally:
            resp.release()
        return
    raise _fail("DocumentUnavailable", f"{url}: more than {MAX_REDIRECTS} redirects", 502)


# --------------------------------------------------------------------------- progress


class Throttle:
    """Progress written at most once every ``every`` seconds, the latest always last.

    ``update`` never waits: writes run in a task, and updates that come while it
    waits its turn are folded into the next write.
    """

    def __init__(
        self,
        write: Callable[[Progress], Awaitable[bool]],
        every: float = PROGRESS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[float, asyncio.Event], Awaitable[None]] | None = None,
    ) -> None:
        """
        Args:
            clock: the time, in seconds (tests pass a clock of their own).
            pause: waits the seconds given, or until the event is set (closing).
        """
        self.write, self.every, self.clock = write, every, clock
        self.pause = pause or _pause
        self.latest: Progress | None = None
        self.written: Progress | None = None
        self.last_write = float("-inf")
        self.task: asyncio.Task[None] | None = None
        self.stopped = False
        self.closing = asyncio.Event()

    def update(self, progress: Progress) -> None:
        self.latest = progress
        if not self.stopped and (self.task is None or self.task.done()):
            self.task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        while not self.stopped and self.latest != self.written:
            wait = self.last_write + self.every - self.clock()
            if wait > 0 and not self.closing.is_set():
                await self.pause(wait, self.closing)
            await self._write_latest()

    async def _write_latest(self) -> None:
        current = self.latest
        if current is None or current == self.written:
            return
        self.last_write = self.clock()
        self.written = current
        try:
            if not await self.write(current):
                self.stopped = True  # the job is gone or was edited: nobody reads this
        except Exception as exc:  # progress is informative; the job goes on without it
            log.warning("could not write progress: %s", exc)

    def cancel(self) -> None:
        """Stop writing (the job was cancelled)."""
        self.stopped = True
        if self.task is not None:
            self.task.cancel()

    async def aclose(self) -> None:
        """Write the latest progress now, if it is not written yet, and stop."""
        if self.stopped:
            return
        self.closing.set()
        if self.task is not None:
            await self.task
        await self._write_latest()
        self.stopped = True


async def _pause(seconds: float, closing: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(closing.wait(), seconds)


async def write_progress(deps: Deps, job: LLMJob, progress: Progress) -> bool:
    """status.progress of exactly this job version (False: it is gone or was edited)."""

    def mutate(status: dict[str, Any]) -> None:
        status["progress"] = progress.wire()

    meta = job.metadata
    written = await deps.kube.update_status(
        LLMJOBS, meta.namespace, meta.name, mutate, uid=meta.uid, generation=meta.generation
    )
    return written is not None


# --------------------------------------------------------------------------- entry


async def answer(deps: Deps, job: LLMJob) -> Answer:
    """The answer of a document job."""
    started = time.monotonic()
    ns = job.metadata.namespace
    primary = await load_flavor(deps, ns, job.spec.flavor)
    fallback = None
    if primary.spec.fallback_flavor:
        fallback = await find_flavor(deps, ns, primary.spec.fallback_flavor)
    text = await load_document(deps, job)
    loaded = time.monotonic()
    enc = tokens.encoding_for(primary.spec.model, primary.spec.tokenizer)

    async def call(messages: list[Message], flavor: Flavor) -> Answer:
        own = flavor.metadata.name == primary.metadata.name
        call = messages_call(messages, job.spec.parameters)
        return await complete(deps, job, call, first=flavor, beside=own)

    async def write(progress: Progress) -> bool:
        return await write_progress(deps, job, progress)

    throttle = Throttle(write)
    session = Session(job, primary, call, throttle.update, enc)
    try:
        final, about = await run(session, text, None, fallback)
    except asyncio.CancelledError:
        throttle.cancel()
        raise
    finally:
        await throttle.aclose()
    about["timings"] = {
        "loadMs": round((loaded - started) * 1000, 1),
        **about.get("timings", {}),
        "callsMs": round(session.busy_ms(), 1),
        "totalMs": round((time.monotonic() - started) * 1000, 1),
    }
    last = session.answers[-1]
    return Answer(
        response=response(final, session, about),
        usage=summed([a.usage for a in session.answers]),
        flavor=last.flavor,
        provider_ms=session.busy_ms(),
    )
