"""Client-facing API formats other than chat completions, as pure translators to and from chat completions."""
