"""The caching core: from an input's key to an answer, through the near-cache, the shared cache, one
call per key (in a process and across the fleet) and the invalidations that retire old answers.

May import models, redis, settings, errors and metrics; never http.
"""
