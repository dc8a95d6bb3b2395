"""The request ledger (issue 17): one row per proxied request that got past
authentication, written off the request path in batches to SQLite (the
default) or PostgreSQL, and the spend reports read from it.

- :mod:`~twisted_gw.ledger.rows`: a finished request as a row (pure);
- :mod:`~twisted_gw.ledger.database`: the databases, each on its own thread;
- :mod:`~twisted_gw.ledger.writer`: the bounded buffer, batching, retries,
  retention and the shutdown flush, on an injectable clock;
- :mod:`~twisted_gw.ledger.report`: the report's parameters (pure);
- :mod:`~twisted_gw.ledger.hook`: the finalize hook that feeds the writer.
"""
