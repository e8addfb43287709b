#!/usr/bin/env bash
# Starts the local control plane (etcd, kube-apiserver, controller-manager,
# scheduler, kwok with fake GPU nodes) on loopback with free ports, prints
# the KUBECONFIG to use, and stops it on Ctrl-C. Builds the binaries first
# when they are missing. LLMLOOM_GPU_NODES sets the number of GPU nodes (2).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" -m devstack.cluster
