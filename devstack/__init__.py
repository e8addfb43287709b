"""The local stack that ``make dev`` and the tests run on: real processes, on loopback.

Never shipped: neither LLMLoom's wheel nor its images hold this package (it is a
distribution of its own, ``devstack/pyproject.toml``), and nothing in LLMLoom
imports it (``.importlinter``).

- ``cluster``: a Kubernetes control plane (etcd, kube-apiserver,
  controller-manager, scheduler, kwok with fake GPU nodes) from the binaries
  ``hack/build-testbed.sh`` builds;
- ``redisserver``: Debian's redis-server;
- ``modelserver``, ``embedserver``: a real small chat model (SmolLM2 on llama.cpp)
  and a real embedding model (MiniLM on onnxruntime) over the OpenAI wire;
- ``faultserver``: an OpenAI-wire server with delays, errors and context limits
  on demand; ``ollamaserver``: Ollama's native API over the small models;
- ``inprocess``: the operator in a thread of the test process;
- ``stack`` (``python -m devstack``, ``make dev``): the whole stack, with
  ``supervisor`` restarting what dies and ``kubelet`` running the workers of
  flavors' pods as local processes;
- ``procs``: the process plumbing they share.
"""
