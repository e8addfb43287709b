"""The front door: the OpenAI API over LLMJob resources.

``protocol`` holds the request and response models, ``errors`` the OpenAI
error envelope, ``auth`` maps bearer tokens to tenants, ``waiter`` waits for
results announced in Redis, ``services`` owns the process's clients, ``chat``
and ``tasks`` are the routes, and ``main`` only assembles the app.
"""
