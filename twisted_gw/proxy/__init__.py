"""The proxy listener: auth, body parsing and the OpenAI endpoints (CONTRACT 4)."""
