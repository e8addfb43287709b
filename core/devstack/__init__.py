"""The local stack that tests and ``llmloom dev`` run on: real processes, on loopback.

``cluster`` starts a Kubernetes control plane (etcd, kube-apiserver,
controller-manager, scheduler, kwok with fake GPU nodes) from binaries built by
``hack/build-testbed.sh``; ``redisserver`` starts Debian's redis-server; ``modelserver``
serves a real small chat model over the OpenAI wire; ``procs`` holds the
process plumbing they share; ``stack`` assembles the whole dev stack.
"""
