#!/usr/bin/env bash
# Builds the binaries of the local Kubernetes test bed from the Go module proxy:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok
# (and helm). They land in a cache outside the repository, one folder per
# version, and nothing is rebuilt when the binaries are already there.
#
# Where KUBEBUILDER_ASSETS names a folder with etcd and kube-apiserver (a laptop
# with setup-envtest), those are used and only what is missing is built.
#
# Usage: hack/build-testbed.sh            prints the bin folder on its last line
# Env:   LLMLOOM_CACHE (default ~/.cache/llmloom), K8S_VERSION, ETCD_VERSION,
#        KWOK_VERSION, HELM_VERSION
set -euo pipefail

K=${K8S_VERSION:-1.36.3}
ETCD=${ETCD_VERSION:-3.6.16}
KWOK=${KWOK_VERSION:-0.8.0}
HELM=${HELM_VERSION:-3.19.0}
CACHE=${LLMLOOM_CACHE:-$HOME/.cache/llmloom}
OUT=$CACHE/testbed/k8s-v$K-etcd-v$ETCD-kwok-v$KWOK
mkdir -p "$OUT"

log() { printf '[build-testbed] %s\n' "$*" >&2; }
have() { [ -x "$OUT/$1" ]; }

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
# Module and build caches live beside the binaries so a CI machine that keeps
# the cache folder also keeps them; honour an explicit GOMODCACHE/GOCACHE.
export GOMODCACHE=${GOMODCACHE:-$CACHE/go/mod} GOCACHE=${GOCACHE:-$CACHE/go/build}

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    if [ -x "$KUBEBUILDER_ASSETS/$b" ] && ! have "$b"; then
      ln -sf "$KUBEBUILDER_ASSETS/$b" "$OUT/$b"; log "using $KUBEBUILDER_ASSETS/$b"
    fi
  done
fi

work() { local d; d=$(mktemp -d); (cd "$d" && go mod init "local/$1" >/dev/null 2>&1); echo "$d"; }

if ! have kube-apiserver || ! have kube-controller-manager || ! have kube-scheduler || ! have kubectl; then
  log "building Kubernetes v$K (cold: 15-30 minutes on 2 cores)"
  MIN=${K#1.}; MIN=${MIN%%.*}; S=0.${K#1.}
  W=$(work k8sbin); cd "$W"
  GOMOD=$(go mod download -json "k8s.io/kubernetes@v$K" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
  # k8s.io/kubernetes replaces its staging modules with ./staging/...; point
  # each at its published release instead.
  while read -r m; do
    go mod edit -replace="$m=$m@v$S"
  done < <(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#\1#p' "$GOMOD")
  g=$(sed -n 's/^godebug //p' "$GOMOD"); if [ -n "$g" ]; then go mod edit -godebug="$g"; fi
  pkgs=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  tools=()
  for p in "${pkgs[@]}"; do tools+=("k8s.io/kubernetes/cmd/$p@v$K"); done
  go get -tool "${tools[@]}"
  LDF="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    LDF+=" -X $p.gitVersion=v$K -X $p.gitMajor=1 -X $p.gitMinor=$MIN -X $p.gitTreeState=clean"
  done
  for p in "${pkgs[@]}"; do
    log "go build $p"
    go build -trimpath -ldflags "$LDF" -o "$OUT/$p.tmp" "k8s.io/kubernetes/cmd/$p"
    mv "$OUT/$p.tmp" "$OUT/$p"
  done
  cd /; rm -rf "$W"
fi

if ! have etcd; then
  log "building etcd v$ETCD"
  W=$(work etcdbin); cd "$W"
  go get -tool "go.etcd.io/etcd/server/v3@v$ETCD"
  go build -trimpath -ldflags "-s -w" -o "$OUT/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$OUT/etcd.tmp" "$OUT/etcd"
  cd /; rm -rf "$W"
fi

if ! have kwok; then
  log "building kwok v$KWOK"
  GOBIN=$OUT go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK"
fi
# kwok's stage definitions (node and pod lifecycles) come with its module.
if [ ! -d "$OUT/kwok-stages" ]; then
  src=$(go mod download -json "sigs.k8s.io/kwok@v$KWOK" | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  mkdir -p "$OUT/kwok-stages.tmp"
  cp -r "$src/kustomize/stage/." "$OUT/kwok-stages.tmp/"
  chmod -R u+w "$OUT/kwok-stages.tmp"; mv "$OUT/kwok-stages.tmp" "$OUT/kwok-stages"
fi

if ! have helm; then
  log "building helm v$HELM"
  W=$(work helmbin); cd "$W"
  go get -tool "helm.sh/helm/v3/cmd/helm@v$HELM"
  go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM" -o "$OUT/helm.tmp" helm.sh/helm/v3/cmd/helm
  mv "$OUT/helm.tmp" "$OUT/helm"
  cd /; rm -rf "$W"
fi

log "binaries ready in $OUT"
echo "$OUT"
