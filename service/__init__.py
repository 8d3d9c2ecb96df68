"""predcache: a prediction cache in front of a slow model.

Wings, each importing only the ones below it (`make lint` checks this with import-linter):

    __main__, app      the command and the composition root: settings in, a running app out
    http/              the face: routes, views, responses, OpenAPI, the aiohttp server's own words
    openai/            the LLM gateway beside it: the OpenAI API under /v1/, streams included
    caching/           the core: orchestration, lookup, freshness, near-cache, single-flight,
                       fleet fill, invalidation, generations, the cache backends
    models/            the model seam: contract, protocols, runner, batcher, admission, upstream, inputs
    redis/             the Redis plumbing: topology, nodes and breakers, fail-open commands, pub/sub,
                       events, leases, key layout
    settings/          settings, the option table, converters
    errors, metrics    what everyone may raise and count

`service.demo` and `service.pair` are the stable paths plug-ins import (see the README).
"""
