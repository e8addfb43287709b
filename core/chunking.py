"""Cutting a long text into chunks of at most N tokens, at the most natural boundaries.

Boundaries are tried in order: paragraphs (blank lines), then lines and sentences;
only a sentence longer than a chunk is cut between tokens. A paragraph or sentence
too long for one chunk starts a new chunk, so that it is cut as few times as
possible. Chunks are exact slices of the text: joined, they give it back, so
nothing is lost or repeated. Pure functions; the tokenizer is passed in.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import tiktoken

# A separator belongs to the piece before it, so that pieces join back into the text.
PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
"""A blank line (and the whitespace after it)."""
SENTENCE = re.compile(r"[.!?]+[\"'\u2019\u201d)\]]*\s+|[\u3002\uff01\uff1f]+\s*|\n+")
"""The end of a sentence (punctuation, closing quotes or brackets, whitespace) or of a line."""


@dataclass(frozen=True)
class Chunk:
    """One slice of the text."""

    text: str
    start: int
    """Offset of its first character in the text."""
    tokens: int
    """Its length in tokens."""


def count(text: str, enc: tiktoken.Encoding) -> int:
    """Tokens of a text; special-token markers in a document are plain text."""
    return len(enc.encode(text, disallowed_special=()))


def split_after(text: str, separator: re.Pattern[str]) -> list[str]:
    """The text cut after each separator; the pieces join back into the text."""
    pieces, start = [], 0
    for match in separator.finditer(text):
        if match.end() > start:
            pieces.append(text[start : match.end()])
            start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def split_tokens(text: str, max_tokens: int, enc: tiktoken.Encoding) -> list[str]:
    """The text cut every ``max_tokens`` tokens (at character boundaries)."""
    ids = enc.encode(text, disallowed_special=())
    _, offsets = enc.decode_with_offsets(ids)
    cuts = [offsets[i] for i in range(max_tokens, len(ids), max_tokens)]
    bounds = [0, *(c for c in cuts if 0 < c < len(text)), len(text)]
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    out: list[str] = []
    for piece in pieces:
        # Re-encoded alone, a window can come out a token longer than it was inside
        # the whole text; such (rare) windows are halved until they fit.
        out.extend(_fit(piece, max_tokens, enc))
    return out


def _fit(piece: str, max_tokens: int, enc: tiktoken.Encoding) -> Iterator[str]:
    if count(piece, enc) <= max_tokens or len(piece) < 2:
        yield piece
        return
    half = len(piece) // 2
    yield from _fit(piece[:half], max_tokens, enc)
    yield from _fit(piece[half:], max_tokens, enc)


def split(text: str, max_tokens: int, enc: tiktoken.Encoding) -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``max_tokens`` tokens.

    Raises:
        ValueError: ``max_tokens`` is below 1.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, not {max_tokens}")
    packer = _Packer(max_tokens)
    for paragraph in split_after(text, PARAGRAPH):
        n = count(paragraph, enc)
        if n <= max_tokens:
            packer.add(paragraph, n)
            continue
        packer.close()  # cut the long paragraph where it must be, not where a chunk ends
        for sentence in split_after(paragraph, SENTENCE):
            m = count(sentence, enc)
            if m <= max_tokens:
                packer.add(sentence, m)
                continue
            packer.close()
            for piece in split_tokens(sentence, max_tokens, enc):
                packer.add(piece, count(piece, enc))
    packer.close()
    return _verified(packer.groups, max_tokens, enc)


class _Packer:
    """Greedy packing of pieces (with their token counts) into groups under a bound."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.groups: list[list[tuple[str, int]]] = []
        self.current: list[tuple[str, int]] = []
        self.tokens = 0

    def add(self, piece: str, tokens: int) -> None:
        if self.current and self.tokens + tokens > self.max_tokens:
            self.close()
        self.current.append((piece, tokens))
        self.tokens += tokens

    def close(self) -> None:
        if self.current:
            self.groups.append(self.current)
        self.current, self.tokens = [], 0


def _verified(
    groups: list[list[tuple[str, int]]], max_tokens: int, enc: tiktoken.Encoding
) -> list[Chunk]:
    """The groups as chunks, each counted as a whole; a group that came out over the
    bound (tokens can merge across the pieces' seams) hands its last pieces on."""
    chunks: list[Chunk] = []
    start = 0
    # Counting every group is a second pass over the whole text: tiktoken does it on
    # all cores at once (it releases the GIL), before the first call can start.
    texts = ["".join(p for p, _ in group) for group in groups]
    counts: list[int | None] = [len(ids) for ids in _encode_all(texts, enc)]
    pending = list(reversed(list(zip(groups, counts, strict=True))))
    while pending:
        group, counted = pending.pop()
        text = "".join(p for p, _ in group)
        n = count(text, enc) if counted is None else counted
        if n > max_tokens and len(group) > 1:
            keep = len(group) - 1
            pending.append((group[keep:], None))
            pending.append((group[:keep], None))
            continue
        if text:
            chunks.append(Chunk(text=text, start=start, tokens=n))
        start += len(text)
    return chunks


def _encode_all(texts: list[str], enc: tiktoken.Encoding) -> list[list[int]]:
    """Each text's tokens (special-token markers as plain text), on all cores."""
    return enc.encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1)


def group_by_budget(
    sizes: Sequence[int], budget: int, overhead: Callable[[int], int] | None = None
) -> list[range]:
    """Consecutive items packed into groups whose sizes sum to at most ``budget``.

    Every group but the last holds at least two items, even over the budget, so
    that combining the groups, and then their results, and so on, always ends;
    the last group may hold one item (which needs no combining).

    Args:
        sizes: the size of each item, in order.
        budget: the most a group should hold.
        overhead: the extra size of a group of n items (separators, headings).
    """
    extra = overhead or (lambda n: 0)
    groups: list[range] = []
    first, total = 0, 0
    for i, size in enumerate(sizes):
        if i - first >= 2 and total + size + extra(i - first + 1) > budget:
            groups.append(range(first, i))
            first, total = i, 0
        total += size
    if first < len(sizes):
        groups.append(range(first, len(sizes)))
    return groups
