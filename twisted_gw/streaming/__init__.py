"""Streaming: the incremental SSE parser, upstream chunk sources and the
per-request relay that writes SSE to the client and finalizes exactly once."""
