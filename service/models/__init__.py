"""The model seam: what predcache needs of a model (the contract), how it is called (runner, batcher,
admission) and the models it knows how to build (plug-ins, the demo, an upstream server).

May import settings, errors and metrics; never caching, redis or http.
"""
