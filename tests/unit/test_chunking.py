"""Chunks of a long text: within the token bound, at natural boundaries, nothing lost."""

from __future__ import annotations

import random

import pytest

from llmloom import chunking, tokens

ENC = tokens.encoding_for("gpt-4")
WORDS = ["the", "river", "ran", "north", "past", "old", "mills", "and", "quiet", "farms"]


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def paragraph(rng: random.Random, sentences: int, words: int = 12) -> str:
    return " ".join(sentence(rng, words) for _ in range(sentences))


def document(seed: int, paragraphs: int, sentences: int = 4) -> str:
    rng = random.Random(seed)
    return "\n\n".join(paragraph(rng, rng.randint(1, sentences)) for _ in range(paragraphs))


@pytest.mark.parametrize("max_tokens", [40, 100, 333])
def test_chunks_rebuild_the_text_and_stay_within_the_bound(max_tokens: int) -> None:
    text = document(1, 60, 8)
    chunks = chunking.split(text, max_tokens, ENC)
    assert "".join(c.text for c in chunks) == text
    assert all(c.tokens == chunking.count(c.text, ENC) <= max_tokens for c in chunks)
    assert [c.start for c in chunks] == [text.index(c.text, c.start) for c in chunks]


def test_paragraphs_that_fit_are_never_split() -> None:
    text = document(2, 40, 3)  # every paragraph is well under 100 tokens
    chunks = chunking.split(text, 100, ENC)
    assert len(chunks) > 5
    for chunk in chunks[1:]:
        assert text[: chunk.start].endswith("\n\n")  # each chunk starts a paragraph


def test_a_long_paragraph_is_cut_after_sentences_and_starts_its_own_chunk() -> None:
    rng = random.Random(3)
    short, long = paragraph(rng, 1), paragraph(rng, 30)
    text = f"{short}\n\n{long}\n\n{short}"
    chunks = chunking.split(text, 80, ENC)
    # The short first paragraph is not topped up with the long one's first sentences.
    assert chunks[0].text == f"{short}\n\n"
    for chunk in chunks[2:]:
        before = text[: chunk.start]
        assert before.endswith(". ") or before.endswith("\n\n")


def test_only_a_sentence_longer_than_a_chunk_is_cut_between_tokens() -> None:
    rng = random.Random(4)
    endless = " ".join(rng.choice(WORDS) for _ in range(500))  # no sentence end at all
    text = f"Intro line.\n\n{endless}. Outro."
    chunks = chunking.split(text, 64, ENC)
    assert "".join(c.text for c in chunks) == text
    assert all(c.tokens <= 64 for c in chunks)
    assert len(chunks) >= chunking.count(endless, ENC) // 64


def test_non_ascii_and_special_token_markers_survive() -> None:
    text = "\n\n".join(
        [
            "Ünïcödé paragraph \u2013 ✓ " * 30,
            "日本語の文です。" * 40,
            "<|endoftext|> is just text " * 20,
        ]
    )
    chunks = chunking.split(text, 50, ENC)
    assert "".join(c.text for c in chunks) == text
    assert all(c.tokens <= 50 for c in chunks)


def test_edge_cases() -> None:
    assert chunking.split("", 10, ENC) == []
    one = chunking.split("Short.", 10, ENC)
    assert [c.text for c in one] == ["Short."]
    with pytest.raises(ValueError):
        chunking.split("text", 0, ENC)


def test_groups_stay_within_the_budget_and_hold_two_items_at_least() -> None:
    sizes = [30, 30, 30, 50, 10, 90, 5, 5, 5]
    groups = chunking.group_by_budget(sizes, 100)
    assert [list(g) for g in groups] == [[0, 1, 2], [3, 4], [5, 6, 7], [8]]
    # Over the budget, pairs still form: combining always shrinks the count.
    assert [list(g) for g in chunking.group_by_budget([80, 80, 80], 100)] == [[0, 1], [2]]
    assert [list(g) for g in chunking.group_by_budget([10] * 4, 100, lambda n: 30 * n)] == [
        [0, 1],
        [2, 3],
    ]


def test_repeated_grouping_always_ends_in_one() -> None:
    rng = random.Random(5)
    for _ in range(50):
        sizes = [rng.randint(1, 300) for _ in range(rng.randint(2, 200))]
        rounds = 0
        while len(sizes) > 1:
            groups = chunking.group_by_budget(sizes, 200)
            assert [i for g in groups for i in g] == list(range(len(sizes)))
            sizes = [sum(sizes[i] for i in g) // len(g) for g in groups]
            rounds += 1
        assert rounds <= 8
