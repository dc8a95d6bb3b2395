"""Observability: the access log now; Prometheus metrics come as a hook later."""
