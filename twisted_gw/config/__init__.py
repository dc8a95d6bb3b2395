"""Configuration: the config file, entity schemas, stores and the snapshot."""
