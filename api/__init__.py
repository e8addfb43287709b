"""The front door: the OpenAI API over LLMJob resources.

- ``main`` only assembles the app; ``services`` owns the process's clients and
  ``deps`` hands them to routes; ``auth`` maps bearer tokens to tenants;
- ``protocol`` holds the request and response models, ``errors`` OpenAI's error
  envelope, ``observability`` request ids, logs and metrics;
- ``serving`` turns a request into an LLMJob (its body stored by reference)
  and its outcome into an answer (or a 202 with a task), with ``admission``
  (rate limits, budgets, 429s) first and ``waiter`` (results announced in
  Redis) or ``streaming`` (a stream relayed as the server sends it) after;
- the routes: ``chat``, ``completions``, ``responses`` and ``embeddings`` (the
  OpenAI wire, forwarded whole), ``models`` (and usage), ``tasks``, ``jobs``
  (/v1/jobs), ``files``, ``batches`` (with ``batchfile``, the input file's
  checks) and ``health``.
"""
