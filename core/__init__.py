"""LLMLoom: LLM work on Kubernetes.

This package (directory ``core/``) is what every component shares: the resource
models behind the CRDs, settings, queue and result conventions, tokenizers and
the small Kubernetes client. The operator (``llmloom.operator``), the worker
(``llmloom.worker``) and the API (``llmloom.api``) import only this package and
libraries, never each other.
"""

__version__ = "0.1.0"

GROUP = "llmloom.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

OPERATOR = "llmloom-operator"
"""The operator's name: the source of its Events, its field manager in server-side apply."""
WORKER = "llmloom-worker"
"""The worker's name: the source of its Events."""
