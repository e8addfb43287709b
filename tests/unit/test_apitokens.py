"""API tokens are random, stored only as hashes, and found by their label."""

from __future__ import annotations

import base64

from llmloom import apitokens


def test_tokens_are_unique_and_prefixed() -> None:
    a, b = apitokens.new_token(), apitokens.new_token()
    assert a != b and a.startswith("llmloom-") and len(a) > 40


def test_secret_holds_the_hash_not_the_token() -> None:
    token = apitokens.new_token()
    secret = apitokens.secret_manifest("t1", "ci", token)
    stored = base64.b64decode(secret["data"]["sha256"]).decode()
    assert token not in str(secret)
    assert stored == apitokens.token_hash(token)
    labels = secret["metadata"]["labels"]
    assert labels[apitokens.LABEL_HASH] == stored[:48] and len(labels[apitokens.LABEL_HASH]) <= 63


def test_matches_only_its_own_token() -> None:
    token = apitokens.new_token()
    secret = apitokens.secret_manifest("t1", "ci", token)
    assert apitokens.matches(secret, token)
    assert not apitokens.matches(secret, apitokens.new_token())
