"""The Redis plumbing: how to reach it (one, cluster, Sentinel), each node's breaker, commands that fail
open, pub/sub events, leases, and where every key lives.

May import settings, errors and metrics; never caching, models or http.
"""
