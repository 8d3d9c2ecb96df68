"""Development tools run by `make` targets (not part of the service or its image)."""
