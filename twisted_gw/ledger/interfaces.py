"""The seam between the ledger's writer and reports and a real database."""

from __future__ import annotations

from zope.interface import Attribute, Interface


class ILedgerDatabase(Interface):
    """A ledger table in a database, reached off the reactor.

    Every method returns a Deferred and never blocks the reactor; a
    database that is down fails the Deferred (with the driver's error), it
    never hangs past the database's own timeout."""

    name = Attribute("What the operator reads in a log line: 'sqlite <path>', 'postgresql'.")

    def start():
        """Start the database's thread (at service start)."""

    def create_schema():
        """CREATE TABLE/INDEX IF NOT EXISTS; safe to repeat."""

    def insert(rows):
        """Append ``rows`` (tuples in ``rows.COLUMNS`` order) in one transaction."""

    def delete_before(ts):
        """Delete the rows older than ``ts`` (seconds since the epoch); their count."""

    def spend(group_by, start, end):
        """``[(id, requests, prompt_tokens, completion_tokens, cost_usd)]`` of
        the rows with ``start <= ts < end``, grouped by ``key`` or ``model``."""

    def close():
        """Stop the thread once what it runs has ended; a Deferred."""
