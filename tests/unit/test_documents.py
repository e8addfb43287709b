"""Document jobs without processes: strategy planning, the calls each strategy makes
(with a stand-in for the provider), usage, and throttled progress."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from llmloom import chunking, tokens
from llmloom.operator.admission import admit
from llmloom.resources import Chunking, Flavor, LLMJob, Message, Progress, Usage
from llmloom.worker import documents as docs
from llmloom.worker.calls import Answer
from llmloom.worker.deps import JobFailed

ENC = tokens.encoding_for("gpt-4")


def said(message: Message) -> str:
    """A plain message's text (document jobs send text, never parts)."""
    return message.content or ""


def flavor(name: str = "small", **spec: Any) -> Flavor:
    return Flavor.model_validate(
        {
            "metadata": {"name": name, "namespace": "t1"},
            "spec": {"provider": "openai", "model": "m", "endpoint": "http://x/v1", **spec},
        }
    )


def job(**spec: Any) -> LLMJob:
    return LLMJob.model_validate(
        {
            "metadata": {"name": "doc", "namespace": "t1", "uid": "u", "generation": 1},
            "spec": {
                "flavor": "small",
                "task": "document",
                "document": {"text": "unused"},
                "prompt": "Summarise.",
                **spec,
            },
        }
    )


def text_of(paragraphs: int) -> str:
    """Paragraphs of about 100 tokens: one to a chunk of 150."""
    return "\n\n".join(f"Paragraph {p}" + " word" * 100 + "." for p in range(paragraphs))


# --------------------------------------------------------------------------- planning


def test_auto_takes_one_call_when_the_document_fits() -> None:
    assert docs.plan("auto", 3000, Chunking(), budget=5000, output=500).strategy == "single"
    # An unknown context: try it whole, and let the provider say otherwise.
    assert docs.plan("auto", 10**6, Chunking(), budget=None, output=500).strategy == "single"


def test_auto_chunks_a_document_too_long_for_the_context() -> None:
    chosen = docs.plan("auto", 9000, Chunking(create_new_turn_after=2000), budget=1500, output=500)
    assert chosen.strategy == "mapReduce" and chosen.chunk_tokens == 1500


def test_auto_prefers_a_fallback_flavor_that_holds_the_whole_document() -> None:
    chosen = docs.plan(
        "auto", 9000, Chunking(), 1500, 500, fallback_budget=100_000, has_fallback=True
    )
    assert chosen.strategy == "single" and chosen.on_fallback
    too_small = docs.plan("auto", 9000, Chunking(), 1500, 500, 5000, has_fallback=True)
    assert too_small.strategy == "mapReduce"


def test_iterative_batches_fit_the_context_with_the_carried_answers() -> None:
    spec = Chunking(create_new_turn_after=1000, max_new_turns=8, summary_turns=2)
    # 6000 tokens of room, 2 carried answers of 500: four turns of 1000 fit.
    chosen = docs.plan("iterative", 50_000, spec, budget=6000, output=500)
    assert (chosen.chunk_tokens, chosen.turns_per_batch) == (1000, 5)
    unknown = docs.plan("iterative", 50_000, spec, budget=None, output=500)
    assert (unknown.chunk_tokens, unknown.turns_per_batch) == (1000, 8)


def test_a_context_too_small_for_any_chunk_fails_with_a_reason() -> None:
    with pytest.raises(JobFailed) as err:
        docs.plan("mapReduce", 9000, Chunking(), budget=10, output=500)
    assert err.value.reason == "ContextLengthExceeded" and "maxTokens" in err.value.message


def test_budget_leaves_room_for_the_answer_and_the_instruction() -> None:
    assert docs.input_budget(None, 500, 20) is None
    budget = docs.input_budget(8192, 500, 20)
    assert budget is not None and budget + 500 + 20 < 8192


def test_the_context_size_is_read_from_providers_overflow_errors() -> None:
    vllm = "This model's maximum context length is 4096 tokens. However, you requested 5000"
    llama = "request (3040 tokens) exceeds the available context size (2048 tokens), try again"
    assert docs.window_from_error(vllm) == 4096
    assert docs.window_from_error(llama) == 2048
    assert docs.window_from_error("too many tokens") is None


def test_progress_estimates_for_the_reduction() -> None:
    assert docs.reduce_estimate(1, 100, 1000) == 0
    assert docs.reduce_estimate(4, 100, 1000) == 1  # all four answers in one call
    assert docs.reduce_estimate(4, 600, 1000) == 3  # pairs, then the pair of pairs


def test_messages_put_the_instruction_after_the_document() -> None:
    msgs = docs.map_messages("chunk text", 2, 5, "List the names.")
    assert [m.role for m in msgs] == ["system", "user", "user"]
    assert "part 2 of 5" in said(msgs[0]) and said(msgs[-1]) == "List the names."
    parts = [docs.Part(1, 2, "A", 1), docs.Part(3, 3, "B", 1)]
    reduce = docs.reduce_messages(parts, "List the names.", "Merge.")
    assert "List the names." in said(reduce[0])
    assert said(reduce[1]) == "[parts 1-2]\nA\n\n[part 3]\nB" and said(reduce[-1]) == "Merge."


# --------------------------------------------------------------------------- running


class Provider:
    """Answers like a model would, records every call, and counts calls in flight."""

    def __init__(self, overflow_over: int | None = None, answer_words: int = 3) -> None:
        self.calls: list[list[Message]] = []
        self.flavors: list[str] = []
        self.in_flight = self.most_in_flight = 0
        self.overflow_over = overflow_over
        self.answer_words = answer_words

    async def __call__(self, messages: list[Message], flavor: Flavor) -> Answer:
        size = sum(chunking.count(said(m), ENC) for m in messages)
        if self.overflow_over is not None and size > self.overflow_over:
            raise JobFailed(
                "ContextLengthExceeded",
                f"request ({size} tokens) exceeds the available context size "
                f"({self.overflow_over} tokens)",
                400,
            )
        self.calls.append(messages)
        self.flavors.append(flavor.metadata.name)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.005)
        self.in_flight -= 1
        system = said(messages[0])
        kind = "reduce" if "processed in parts" in system else "answer"
        text = f"{kind}-{len(self.calls)} " + "word " * self.answer_words
        return Answer(
            response={
                "model": "m",
                "choices": [{"message": {"content": text}, "finish_reason": "stop"}],
            },
            usage=Usage(prompt_tokens=size, completion_tokens=2, total_tokens=size + 2, cost=0.5),
            flavor=flavor.metadata.name,
            provider_ms=5,
        )


def run(
    the_job: LLMJob,
    text: str,
    provider: Provider,
    primary: Flavor | None = None,
    fallback: Flavor | None = None,
) -> tuple[str, dict[str, Any], docs.Session, list[Progress]]:
    reports: list[Progress] = []
    session = docs.Session(the_job, primary or flavor(), provider, reports.append, ENC)

    async def go() -> tuple[str, dict[str, Any]]:
        return await docs.run(session, text, chunking.count(text, ENC), fallback)

    final, about = asyncio.run(go())
    return final, about, session, reports


def test_map_reduce_maps_in_parallel_up_to_the_concurrency_then_combines() -> None:
    text = text_of(8)
    the_job = job(strategy="mapReduce", chunking={"createNewTurnAfter": 150})
    provider = Provider()
    final, about, session, reports = run(the_job, text, provider, flavor(concurrency=3))
    maps = [c for c in provider.calls if "processed in parts" not in said(c[0])]
    assert about["chunks"] == len(maps) == 8 and provider.most_in_flight == 3
    # Every chunk reached the model once, in its own call, in order of the document.
    sent = "".join(said(c[1]) for c in maps)
    assert sent == text
    assert final.startswith("reduce-") and about["reduceLevels"] == 1
    assert reports[-1] == Progress(done=9, total=9, phase="reduce")
    assert [r.done for r in reports] == sorted(r.done for r in reports)
    usage = docs.summed([a.usage for a in session.answers])
    assert usage.prompt_tokens == sum(a.usage.prompt_tokens for a in session.answers)
    assert usage.cost == 9 * 0.5


def test_answers_too_long_for_one_reduce_call_are_combined_level_by_level() -> None:
    text = text_of(16)
    the_job = job(
        strategy="mapReduce",
        chunking={"createNewTurnAfter": 150},
        parameters={"maxTokens": 50},
    )
    provider = Provider(answer_words=60)  # answers of ~60 tokens: two per reduce call
    _, about, _, reports = run(the_job, text, provider)
    assert about["reduceLevels"] == 4  # 16 -> 8 -> 4 -> 2 -> 1
    reduces = [c for c in provider.calls if "processed in parts" in said(c[0])]
    assert len(reduces) == 15
    assert "[parts 1-8]" in said(reduces[-1][1]) and "[parts 9-16]" in said(reduces[-1][1])
    assert reports[-1].done == reports[-1].total == 31


def test_without_reduce_summary_the_answers_are_joined_in_order() -> None:
    the_job = job(
        strategy="mapReduce", chunking={"createNewTurnAfter": 150, "reduceSummary": False}
    )
    provider = Provider()
    final, about, _, _ = run(the_job, text_of(3), provider)
    assert len(provider.calls) == 3 and "reduceLevels" not in about
    assert final.index("[part 1]") < final.index("[part 2]") < final.index("[part 3]")


def test_iterative_goes_in_order_and_carries_the_last_answers() -> None:
    the_job = job(
        strategy="iterative",
        chunking={"createNewTurnAfter": 150, "maxNewTurns": 2, "summaryTurns": 2},
    )
    provider = Provider()
    final, about, _, _ = run(the_job, text_of(8), provider, flavor(concurrency=8))
    batches = [c for c in provider.calls if "processed in parts" not in said(c[0])]
    assert len(batches) == 4 and provider.most_in_flight == 1 and about["turnsPerBatch"] == 2
    fourth = "\n".join(said(m) for m in batches[3])
    assert "answer-2" in fourth and "answer-3" in fourth and "answer-1" not in fourth
    # Each turn is its own message, after the carried answers and before the instruction.
    assert [m.role for m in batches[3]] == ["system", "user", "user", "user", "user"]
    assert said(batches[3][-1]) == "Summarise." and "parts 7 to 8 of 8" in said(batches[3][0])
    assert final.startswith("reduce-")


def test_auto_chunks_when_the_provider_reports_an_overflow() -> None:
    text = text_of(20)  # ~2100 tokens, on a flavor whose context is unknown
    provider = Provider(overflow_over=1000)
    final, about, _, reports = run(job(parameters={"maxTokens": 100}), text, provider)
    assert about["strategy"] == "mapReduce" and about["contextOverflow"] is True
    # The chunks were sized from the context the error stated, so none overflowed.
    assert about["chunkTokens"] <= 1000 and about["chunks"] >= 3
    assert final.startswith("reduce-") and reports[-1].done == reports[-1].total


@pytest.mark.parametrize("strategy", ["mapReduce", "iterative"])
def test_every_strategy_cuts_again_to_the_context_an_overflow_states(strategy: str) -> None:
    # The flavor says 4,096 tokens; the server gives each call 1,000 (llama.cpp's slots).
    text = text_of(40)
    provider = Provider(overflow_over=1000)
    primary = flavor(contextWindow=4096)
    the_job = job(
        strategy=strategy, parameters={"maxTokens": 100}, chunking={"createNewTurnAfter": 3000}
    )
    final, about, _, _ = run(the_job, text, provider, primary)
    assert about["contextOverflow"] is True and about["contextWindow"] == 1000
    assert about["chunkTokens"] < 1000 and final


def test_an_overflow_that_states_no_smaller_context_fails_with_the_hint() -> None:
    primary = flavor(contextWindow=900)
    with pytest.raises(JobFailed) as err:
        the_job = job(strategy="mapReduce", chunking={"createNewTurnAfter": 3000})
        run(the_job, text_of(40), Provider(overflow_over=500), primary)
    assert err.value.reason == "ContextLengthExceeded"


def test_explicit_single_fails_on_overflow_instead_of_chunking() -> None:
    with pytest.raises(JobFailed) as err:
        run(job(strategy="single"), text_of(20), Provider(overflow_over=1000))
    assert err.value.reason == "ContextLengthExceeded"


def test_auto_sends_a_document_too_long_for_the_flavor_to_its_fallback() -> None:
    primary = flavor(contextWindow=1000, fallbackFlavor="big")
    big = flavor("big", contextWindow=100_000)
    provider = Provider()
    final, about, _, _ = run(job(), text_of(20), provider, primary, big)
    assert about["strategy"] == "single" and provider.flavors == ["big"]
    assert final.startswith("answer-1")


def test_a_failed_chunk_fails_the_job_with_a_hint() -> None:
    class Failing(Provider):
        async def __call__(self, messages: list[Message], flavor: Flavor) -> Answer:
            if "part 3 of" in said(messages[0]):
                raise JobFailed("ContextLengthExceeded", "maximum context length is 10", 400)
            return await super().__call__(messages, flavor)

    with pytest.raises(JobFailed) as err:
        run(job(strategy="mapReduce", chunking={"createNewTurnAfter": 150}), text_of(6), Failing())
    assert "createNewTurnAfter" in err.value.message


def test_bounded_map_raises_the_first_failure_and_stops_the_rest() -> None:
    started: list[int] = []

    async def work(i: int, _: None) -> int:
        started.append(i)
        if i == 1:
            raise JobFailed("ProviderRejected", "no", 400)
        await asyncio.sleep(1)
        return i

    async def go() -> None:
        await docs.bounded_map(work, [None] * 10, 2)

    with pytest.raises(JobFailed):
        asyncio.run(go())
    assert started == [0, 1]  # nothing starts after the failure


def test_the_response_is_a_chat_completion_with_summed_usage() -> None:
    the_job = job(strategy="mapReduce", chunking={"createNewTurnAfter": 150})
    final, about, session, _ = run(the_job, text_of(3), Provider())
    body = docs.response(final, session, about)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == final
    assert body["usage"]["total_tokens"] == sum(a.usage.total_tokens for a in session.answers)
    assert body["llmloom"]["calls"] == 4 and body["llmloom"]["flavors"] == ["small"]


# --------------------------------------------------------------------------- progress


class FakeTime:
    """A clock that moves only when the test moves it; a pause lasts until it has."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def pause(self, seconds: float, closing: asyncio.Event) -> None:
        until = self.now + seconds
        while self.now < until and not closing.is_set():  # noqa: ASYNC110 (a clock of our own)
            await asyncio.sleep(0)


def test_progress_is_written_at_most_once_per_interval_and_ends_with_the_latest() -> None:
    clock = FakeTime()
    written: list[tuple[float, Progress]] = []

    async def write(p: Progress) -> bool:
        written.append((clock(), p))
        return True

    async def go() -> None:
        throttle = docs.Throttle(write, every=1.0, clock=clock, pause=clock.pause)
        for i in range(50):  # 5 s of updates, one every 0.1 s
            throttle.update(Progress(done=i, total=50, phase="map"))
            clock.now += 0.1
            await asyncio.sleep(0)
        throttle.update(Progress(done=50, total=50, phase="map"))
        await throttle.aclose()

    asyncio.run(go())
    times = [t for t, _ in written]
    assert written[0][1].done == 0  # the first at once
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(times[:-1]))  # a second apart
    assert written[-1][1] == Progress(done=50, total=50, phase="map")  # the latest, last
    assert len(written) <= 5 / 1.0 + 2  # one a second over 5 s, and the last
    assert [p.done for _, p in written] == sorted(p.done for _, p in written)


def test_progress_stops_when_the_job_is_gone() -> None:
    clock = FakeTime()
    written: list[Progress] = []

    async def write(p: Progress) -> bool:
        written.append(p)
        return False  # edited or deleted

    async def go() -> None:
        throttle = docs.Throttle(write, every=1.0, clock=clock, pause=clock.pause)
        throttle.update(Progress(done=1, total=3))
        await asyncio.sleep(0)
        clock.now += 5
        throttle.update(Progress(done=2, total=3))
        await throttle.aclose()

    asyncio.run(go())
    assert written == [Progress(done=1, total=3)]


# --------------------------------------------------------------------------- admission


def test_a_document_job_runs_on_a_chat_flavor_only() -> None:
    assert admit(job(), flavor(), 0, 30).action == "enqueue"
    rejected = admit(job(), flavor(capabilities=["embeddings"]), 0, 30)
    assert (rejected.action, rejected.reason) == ("reject", "TaskNotSupported")
