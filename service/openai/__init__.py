"""The LLM gateway (MODEL=openai+http://HOST:PORT/v1): the OpenAI API under /v1/, cached.

Request keys and scope (calls, scope, cache_control), the upstream client (upstream) and its event
streams (sse, assembly, replay), the live log of generations in progress (live), the model the cache
core calls (model), the orchestration (gateway) and the routes and answers (routes, streaming,
headers, errors). Imports caching, models, redis, settings, errors and metrics; never http.
"""
