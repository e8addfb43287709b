"""The ``llmloom`` command: one entry point for every process and a few chores.

This is the only module of the core package that reaches into the operator,
API and worker packages, and only inside the subcommand that runs each one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
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
    from llmloom.kube import SECRETS, Kube
    from llmloom.settings import CommonSettings

    if a.action == "create" and a.manifest:
        # No cluster access needed: the token goes to stderr, the Secret to stdout, for
        # `... | kubectl apply -f -` with the caller's own permissions.
        token = apitokens.new_token()
        secret = apitokens.secret_manifest(a.namespace, a.name, token, a.description or "")
        print(f"token (shown once): {token}", file=sys.stderr)
        print(yaml.safe_dump(secret), end="")
        return

    async def main() -> None:
        kube = Kube.connect(CommonSettings().kubeconfig)
        try:
            if a.action == "create":
                token = await apitokens.create(kube, a.namespace, a.name, a.description or "")
                print(token)
            else:
                await kube.delete(SECRETS, a.namespace, a.name)
                print(f"revoked {a.namespace}/{a.name}")
        finally:
            await kube.aclose()

    asyncio.run(main())


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

    p = sub.add_parser("token", help="create or revoke API tokens of a tenant (namespace)")
    p.add_argument("action", choices=["create", "revoke"])
    p.add_argument("-n", "--namespace", required=True)
    p.add_argument("--name", default="llmloom-token", help="name of the token's Secret")
    p.add_argument("--description")
    p.add_argument(
        "--manifest",
        action="store_true",
        help="print the token's Secret instead of creating it (pipe into kubectl apply -f -)",
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
