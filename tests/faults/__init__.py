"""Fault injection and bad input: Redis outages, cancellations, a sick model, hostile requests."""
