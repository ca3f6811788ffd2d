"""Rate limits per token user and per client address (OWASP API4): counting in ``limiter``, placement in
``middleware``."""
