"""Hooks: pre_call / post_call / finalize stages run in order by one manager."""
