"""twisted-gw: an OpenAI-compatible LLM gateway on Twisted, wire-compatible with AISIX."""

__version__ = "0.1.0"
