"""The HTTP face: routes, thin views, responses and their headers, the OpenAPI description.

May import caching, models, redis, settings, errors and metrics; nothing below imports it.
"""
