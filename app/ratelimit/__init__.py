"""Rate limits per token user and per client address (OWASP API4): the algorithm and the in-memory store in
``limiter``, the shared store in ``redis_limiter``, and the Litestar plugin that wires them into the app in
``plugin`` (``app.access`` charges a request before its route runs)."""
