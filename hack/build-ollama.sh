#!/usr/bin/env bash
# Builds the real Ollama server from its Go module (cgo: llama.cpp and ggml,
# CPU only) into a cache outside the repository, so the integration tests can
# run LLMLoom's Ollama wire against a real Ollama serving a small local GGUF.
# Nothing is rebuilt when the binary is already there; a lock keeps two
# concurrent callers from building it twice.
#
# The module zip leaves out llama.cpp's vendored headers (a vendor/ folder):
# nlohmann/json.hpp and stb/stb_image.h come from Debian (apt), miniaudio.h
# from the miniaudio sdist on PyPI.
#
# Usage: hack/build-ollama.sh            prints the binary's path on its last line
# Env:   LLMLOOM_CACHE (default ~/.cache/llmloom), OLLAMA_VERSION
set -euo pipefail

V=${OLLAMA_VERSION:-0.12.6}
V=${V#v}
MINIAUDIO=1.71
CACHE=${LLMLOOM_CACHE:-$HOME/.cache/llmloom}
OUT=$CACHE/ollama/v$V
BIN=$OUT/ollama

log() { printf '[build-ollama] %s\n' "$*" >&2; }

if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
if ! flock -n 9; then
  log "another build holds $OUT/.lock; waiting"
  flock 9
fi
# The other caller may have finished the build while this one waited.
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi

# nlohmann/json.hpp and stb/stb_image.h (installed under /usr/include).
missing=()
for p in nlohmann-json3-dev libstb-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (apt)"
  SUDO=$(command -v sudo || true)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# miniaudio/miniaudio.h, from the miniaudio sdist.
INC=$CACHE/ollama/include/miniaudio-$MINIAUDIO
if [ ! -f "$INC/miniaudio/miniaudio.h" ]; then
  log "fetching miniaudio.h (miniaudio==$MINIAUDIO sdist, PyPI)"
  T=$(mktemp -d)
  python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
    "miniaudio==$MINIAUDIO" -d "$T" >&2
  tar xzf "$T/miniaudio-$MINIAUDIO.tar.gz" -C "$T"
  mkdir -p "$INC/miniaudio"
  cp "$T/miniaudio-$MINIAUDIO/miniaudio/miniaudio.h" "$INC/miniaudio/miniaudio.h.tmp"
  mv "$INC/miniaudio/miniaudio.h.tmp" "$INC/miniaudio/miniaudio.h"
  rm -rf "$T"
fi

export GOTOOLCHAIN=local CGO_ENABLED=1
# Go's caches live beside the binaries (shared with build-testbed.sh) so a
# rebuild is quick; honour an explicit GOMODCACHE/GOCACHE.
export GOPATH=$CACHE/go
export GOMODCACHE=${GOMODCACHE:-$CACHE/go/mod} GOCACHE=${GOCACHE:-$CACHE/go/build}
export CGO_CPPFLAGS="-I$INC${CGO_CPPFLAGS:+ $CGO_CPPFLAGS}"

log "building ollama v$V (cgo, llama.cpp: cold about 6 minutes on 2 cores)"
rm -rf "$OUT/.gobin"
LDF="-s -w -X=github.com/ollama/ollama/version.Version=$V -X=github.com/ollama/ollama/server.mode=release"
GOBIN=$OUT/.gobin go install -trimpath -ldflags "$LDF" "github.com/ollama/ollama@v$V"
mv "$OUT/.gobin/ollama" "$BIN"
rm -rf "$OUT/.gobin"

log "ollama ready: $BIN"
echo "$BIN"
