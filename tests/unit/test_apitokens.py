"""API tokens are random, stored only as hashes, and found by their label."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from llmloom import apitokens, cli
from llmloom.kube import bearer, load_config


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


def test_kubeconfig_tokens_are_sent(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: abc123}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    assert bearer(load_config(str(kubeconfig))) == "Bearer abc123"


def test_cli_prints_a_secret_to_apply_and_the_token_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli.main(["token", "create", "-n", "team-a", "--name", "ci", "--manifest"])
    out, err = capsys.readouterr()
    token = err.split("token (shown once): ")[1].strip()
    secret = yaml.safe_load(out)
    assert secret["metadata"]["namespace"] == "team-a" and secret["metadata"]["name"] == "ci"
    assert apitokens.matches(secret, token) and token not in out
