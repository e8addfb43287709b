"""API tokens are random, stored only as hashes in APITokens, found by their hash, and
migrated from the Secrets of old."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from llmloom import apitokens, cli
from llmloom.api.auth import TokenAuth, by_hash
from llmloom.api.errors import APIError
from llmloom.informer import Informer
from llmloom.kube import API_TOKENS, Kube, bearer, load_config
from llmloom.resources import APIToken


def test_tokens_are_unique_and_prefixed() -> None:
    a, b = apitokens.new_token(), apitokens.new_token()
    assert a != b and a.startswith("llmloom-") and len(a) > 40


def stored(token: str, **kw: Any) -> APIToken:
    digest = apitokens.token_hash(token)
    return APIToken.model_validate(apitokens.manifest("t1", "ci", digest, **kw))


def test_an_apitoken_holds_the_hash_not_the_token() -> None:
    token = apitokens.new_token()
    body = apitokens.manifest("t1", "ci", apitokens.token_hash(token), "for CI")
    assert token not in str(body)
    assert body["kind"] == "APIToken" and body["spec"]["sha256"] == apitokens.token_hash(token)


def test_a_token_matches_only_its_own_apitoken_until_it_expires() -> None:
    token = apitokens.new_token()
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert apitokens.valid(stored(token), token, now)
    assert not apitokens.valid(stored(token), apitokens.new_token(), now)
    expiring = stored(token, expires_at=now + timedelta(days=1))
    assert apitokens.valid(expiring, token, now)
    assert not apitokens.valid(expiring, token, now + timedelta(days=2))


def test_a_token_secret_of_old_migrates_with_its_hash() -> None:
    token = apitokens.new_token()
    digest = apitokens.token_hash(token)
    secret = {
        "metadata": {
            "name": "ci",
            "namespace": "t1",
            "labels": {apitokens.LEGACY_LABEL: "true"},
            "annotations": {"llmloom.io/description": "the CI's"},
        },
        "data": {"sha256": base64.b64encode(digest.encode()).decode()},
    }
    body = apitokens.from_legacy_secret(secret)
    assert body is not None and body["spec"] == {"sha256": digest, "description": "the CI's"}
    assert apitokens.matches(APIToken.model_validate(body), token)
    assert apitokens.from_legacy_secret({"metadata": {"name": "x", "namespace": "t1"}}) is None


def test_the_api_finds_a_tenant_by_its_tokens_hash() -> None:
    auth = TokenAuth(
        Informer(cast(Kube, None), API_TOKENS, APIToken.model_validate, {"sha256": by_hash})
    )
    token = apitokens.new_token()
    auth.tokens._put(apitokens.manifest("team-a", "ci", apitokens.token_hash(token)))
    assert auth.tenant(f"Bearer {token}") == "team-a"
    for header in (None, "Basic x", f"Bearer {apitokens.new_token()}", "Bearer sk-other"):
        with pytest.raises(APIError) as err:
            auth.tenant(header)
        assert err.value.status == 401


def test_kubeconfig_tokens_are_sent(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: abc123}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    assert bearer(load_config(str(kubeconfig))) == "Bearer abc123"


def test_cli_prints_an_apitoken_to_apply_and_the_token_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli.main(["token", "create", "-n", "team-a", "--name", "ci", "--manifest"])
    out, err = capsys.readouterr()
    token = err.split("token (shown once): ")[1].strip()
    body = yaml.safe_load(out)
    assert body["metadata"]["namespace"] == "team-a" and body["metadata"]["name"] == "ci"
    assert apitokens.matches(APIToken.model_validate(body), token) and token not in out
