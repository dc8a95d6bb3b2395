"""The Admin API (CONTRACT 3): its Klein app, OpenAPI document and UI."""
