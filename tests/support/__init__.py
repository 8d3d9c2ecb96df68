"""Fault-injection helpers for tests: a private redis-server, a TCP proxy with knobs, test models."""
