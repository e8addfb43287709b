"""The ``llmloom`` command: one entry point for every process and a few chores.

This is the only module of the core package that reaches into the operator,
API and worker packages, and only inside the subcommand that runs each one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import UTC, datetime
from typing import Any


def _log_level(level: str) -> None:
    """The process's LLMLOOM_LOG_LEVEL, for every logger (the root's level)."""
    logging.getLogger().setLevel(level.upper())


def _operator(a: argparse.Namespace) -> None:
    from llmloom.operator.runner import run
    from llmloom.settings import OperatorSettings

    settings = OperatorSettings(**({"namespace": a.namespace} if a.namespace else {}))
    _log_level(settings.log_level)
    run(settings)


def _api(a: argparse.Namespace) -> None:
    import uvicorn

    from llmloom.api.main import create_app
    from llmloom.settings import ApiSettings

    overrides: dict[str, Any] = {
        k: v for k, v in (("host", a.host), ("port", a.port)) if v is not None
    }
    settings = ApiSettings(**overrides)
    _log_level(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


def _worker(a: argparse.Namespace) -> None:
    from llmloom.settings import WorkerSettings
    from llmloom.worker.main import run

    overrides: dict[str, Any] = {}
    if a.queue:
        overrides["queues"] = a.queue
    if a.burst:
        overrides["burst"] = True
    settings = WorkerSettings(**overrides)
    _log_level(settings.log_level)
    run(settings)


def _token(a: argparse.Namespace) -> None:
    import yaml

    from llmloom import apitokens
    from llmloom.kube import API_TOKENS, Kube
    from llmloom.settings import CommonSettings

    expires = datetime.fromisoformat(a.expires_at) if a.expires_at else None
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    if a.action == "create" and a.manifest:
        # No cluster access needed: the token goes to stderr, the APIToken to stdout, for
        # `... | kubectl apply -f -` with the caller's own permissions.
        token = apitokens.new_token()
        digest = apitokens.token_hash(token)
        body = apitokens.manifest(a.namespace, a.name, digest, a.description or "", expires)
        print(f"token (shown once): {token}", file=sys.stderr)
        print(yaml.safe_dump(body), end="")
        return

    async def main() -> None:
        kube = Kube.connect(CommonSettings().kubeconfig)
        try:
            if a.action == "create":
                desc = a.description or ""
                print(await apitokens.create(kube, a.namespace, a.name, desc, expires))
            elif a.action == "revoke":
                await kube.delete(API_TOKENS, a.namespace, a.name)
                print(f"revoked {a.namespace}/{a.name}")
            else:
                await _migrate(kube, None if a.namespace == "*" else a.namespace)
        finally:
            await kube.aclose()

    asyncio.run(main())


async def _migrate(kube: Any, namespace: str | None) -> None:
    """Turn the token Secrets made before APIToken into APITokens (same name and hash);
    the Secrets are left for the admin to delete once clients work."""
    from llmloom import apitokens
    from llmloom.kube import API_TOKENS, SECRETS, KubeError

    selector = f"{apitokens.LEGACY_LABEL}=true"
    for secret in await kube.list(SECRETS, namespace, selector):
        body = apitokens.from_legacy_secret(secret)
        if body is None:
            continue
        meta = body["metadata"]
        try:
            await kube.create(API_TOKENS, meta["namespace"], body)
            print(f"migrated {meta['namespace']}/{meta['name']}")
        except KubeError as exc:
            if exc.code != 409:
                raise
            print(f"already there: {meta['namespace']}/{meta['name']}")
    print(f"the old Secrets stay: kubectl delete secret -A -l {selector} once clients work")


def _crds(a: argparse.Namespace) -> None:
    from llmloom import crdgen

    crdgen.main([a.dir])


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="llmloom", description="LLM work on Kubernetes.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("operator", help="run the operator (kopf)")
    p.add_argument("--namespace", help="watch only this namespace")
    p.set_defaults(func=_operator)

    p = sub.add_parser("api", help="run the OpenAI-compatible API")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=_api)

    p = sub.add_parser("worker", help="run a worker on flavor queues")
    p.add_argument("--queue", action="append", help="NAMESPACE/FLAVOR (repeatable)")
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    p.set_defaults(func=_worker)

    p = sub.add_parser(
        "token",
        help="create or revoke API tokens of a tenant (namespace); migrate old token Secrets",
    )
    p.add_argument("action", choices=["create", "revoke", "migrate"])
    p.add_argument("-n", "--namespace", required=True, help="the tenant (migrate: '*' for all)")
    p.add_argument("--name", default="llmloom-token", help="name of the token's APIToken")
    p.add_argument("--description")
    p.add_argument("--expires-at", help="when the token stops working (ISO 8601, UTC)")
    p.add_argument(
        "--manifest",
        action="store_true",
        help="print the token's APIToken instead of creating it (pipe into kubectl apply -f -)",
    )
    p.set_defaults(func=_token)

    p = sub.add_parser("crds", help="write the CRD manifests generated from the models")
    p.add_argument("dir", nargs="?", default="crds")
    p.set_defaults(func=_crds)
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Every request of the HTTP clients at INFO would drown what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        args.func(args)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
