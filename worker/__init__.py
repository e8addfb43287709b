"""The LLMLoom worker: takes job references from RQ, calls the model, stores results.

``providers`` speaks the model servers' wire protocols; ``processing`` runs one
job version end to end; ``tasks`` is the function RQ calls; ``main`` assembles
the worker process.
"""
