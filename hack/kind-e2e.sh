#!/usr/bin/env bash
# End to end on kind, where Docker runs (not on LLMLoom's CI machines, which have
# no container engine): creates a kind cluster, builds and loads both images,
# installs the chart, applies an Ollama flavor on CPU and a chat job, waits for
# it to succeed, prints the answer, and deletes the cluster.
#
# Usage: hack/kind-e2e.sh          (needs docker, kind, kubectl, helm; pulls the
#                                   Ollama image and a 0.5B model from the internet)
# Env:   CLUSTER (llmloom-e2e), MODEL (qwen2.5:0.5b), KEEP=1 keeps the cluster.
set -euo pipefail

CLUSTER=${CLUSTER:-llmloom-e2e}
MODEL=${MODEL:-qwen2.5:0.5b}
TAG=e2e
NS=llmloom-system
TENANT=demo
cd "$(dirname "$0")/.."

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: $tool is required" >&2; exit 1; }
done

cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

echo "==> kind cluster $CLUSTER"
kind create cluster --name "$CLUSTER" --wait 120s

echo "==> images"
docker build -f Dockerfile.operator -t "llmloom/operator:$TAG" .
docker build -f Dockerfile.worker -t "llmloom/worker:$TAG" .
kind load docker-image --name "$CLUSTER" "llmloom/operator:$TAG" "llmloom/worker:$TAG"

echo "==> chart"
helm upgrade --install llmloom charts/llmloom -n "$NS" --create-namespace \
  --set image.tag="$TAG" --set image.pullPolicy=Never --set api.replicas=1 --wait --timeout 5m
helm test llmloom -n "$NS"

echo "==> an Ollama flavor on CPU and a job"
kubectl create namespace "$TENANT"
kubectl apply -n "$TENANT" -f - <<YAML
apiVersion: llmloom.io/v1alpha1
kind: Flavor
metadata: {name: tiny}
spec:
  provider: ollama
  model: "$MODEL"
  concurrency: 2
  deploy: {gpus: 0, resources: {requests: {cpu: "1", memory: 2Gi}}}
---
apiVersion: llmloom.io/v1alpha1
kind: LLMJob
metadata: {name: hello}
spec:
  flavor: tiny
  messages: [{role: user, content: "Name three colours of the rainbow."}]
  parameters: {maxTokens: 32}
YAML
kubectl wait -n "$TENANT" flavor/tiny --for=condition=Ready --timeout=15m
kubectl wait -n "$TENANT" llmjob/hello --for=condition=Succeeded --timeout=10m
kubectl get -n "$TENANT" llmjob hello

key=$(kubectl get -n "$TENANT" llmjob hello -o jsonpath='{.status.result.key}')
echo "==> the answer ($key)"
kubectl exec -n "$NS" statefulset/llmloom-redis -- redis-cli GET "$key"
echo
echo "kind-e2e: passed"
