"""The LLMLoom operator: kopf handlers over pure decisions.

``admission`` decides what to do with a job (pure, unit-tested without a
cluster); ``handlers`` registers the thin kopf handlers that apply those
decisions; ``runner`` configures kopf and runs it.
"""
