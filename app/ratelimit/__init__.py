"""Rate limits per token user and per client address (OWASP API4): the algorithm and the in-memory store in
``limiter``, the shared store in ``redis_limiter``, where requests are counted in ``middleware``."""
