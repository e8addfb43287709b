#!/usr/bin/env bash
# Installs what the side-by-side benchmarks compare LLMLoom with, outside the
# repository: wrk (the load generator, from Debian) and LiteLLM's proxy at one
# pinned version in a virtualenv of its own under the cache, never in .venv
# and never among LLMLoom's dependencies. Whatever is already there is kept;
# a lock keeps two concurrent callers from installing it twice.
#
# Usage: bench/peers.sh        prints the venv's `litellm` executable on its last line
# Env:   LLMLOOM_CACHE (default ~/.cache/llmloom), LITELLM_VERSION, PYTHON (default python3)
set -euo pipefail

# 1.108.7 is the newest release whose [proxy] extra resolves from PyPI: 1.108.8 to
# 1.108.14 pin litellm-enterprise 0.1.79.post2/.post3 or litellm-proxy-extras
# 0.4.110.post1, 1.109.x litellm-proxy-extras 0.4.113, and 1.110.x a litellm-proxy
# package, none of which is published there.
V=${LITELLM_VERSION:-1.108.7}
CACHE=${LLMLOOM_CACHE:-$HOME/.cache/llmloom}
VENV=$CACHE/bench/litellm-venv
BIN=$VENV/bin/litellm
STAMP=$VENV/.litellm-$V
PY=${PYTHON:-python3}

log() { printf '[bench/peers] %s\n' "$*" >&2; }

if ! command -v wrk >/dev/null 2>&1; then
  log "installing wrk (apt)"
  SUDO=$(command -v sudo || true)
  if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
  fi
fi

if [ -f "$STAMP" ] && [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi

mkdir -p "$CACHE/bench"
exec 9>"$CACHE/bench/.litellm.lock"
if ! flock -n 9; then
  log "another install holds $CACHE/bench/.litellm.lock; waiting"
  flock 9
fi
# The other caller may have finished while this one waited.
if [ -f "$STAMP" ] && [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi

# A venv cannot be moved once made, so it is made in place; the stamp, written
# last, tells a finished install (of this version) from a broken or older one.
log "installing litellm[proxy]==$V into $VENV (pip; a few minutes)"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "litellm[proxy]==$V" >&2
LITELLM_LOCAL_MODEL_COST_MAP=True "$BIN" --version >&2 || true
touch "$STAMP"
echo "$BIN"
