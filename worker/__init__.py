"""The LLMLoom worker: takes job references from RQ, calls the model, stores results.

- ``main`` assembles a worker process; ``runner`` is the concurrent RQ worker
  (a taker thread, RQ's records on the main thread) and ``tasks`` the event
  loop's context the jobs run on, with ``deps`` the clients they share;
- ``inflight`` holds the running versions' leases and the watch that stops
  them; ``readiness`` waits for the model server beside the worker;
- ``processing`` runs one job version end to end and chooses the work by task;
  ``bodies`` makes its call (a request's stored body, or the job's spec);
  ``batchlines`` runs one line of a batch, a work item with no LLMJob;
  ``calls`` gets one answer through retries, fallback and failover;
  ``documents`` runs a document job's strategies over many such calls;
- ``providers`` speaks the model servers' wires (OpenAI, Ollama).
"""
