"""Rate limiting (CONTRACT 4.5): the pure window arithmetic, the stores
behind IRateLimitStore (in memory, Redis) and what the hook asks of them."""
