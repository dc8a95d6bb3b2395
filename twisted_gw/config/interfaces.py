"""The config store seam: the embedded file store or etcd (CONTRACT 2)."""

from __future__ import annotations

from zope.interface import Attribute, Interface


class DuplicateError(Exception):
    """Another id already holds this entity's unique name/key."""


class StoreError(Exception):
    """The store could not do what was asked (I/O, etcd down); message is safe to show."""


class IConfigStore(Interface):
    """Where models and API keys live, and the snapshot built from them.

    Every method that touches storage returns a Deferred, so a networked store
    (etcd) and the local one share callers. ``snapshot`` is swapped atomically
    after every change, and listeners are told.
    """

    snapshot = Attribute("The current immutable Snapshot.")

    def start():
        """Load everything; the Deferred fires when ``snapshot`` is ready."""

    def when_loaded():
        """A Deferred for the end of the store's first load: it fires with
        the first snapshot, or fails (a StoreError) when the store gave up
        (etcd: its start-up retries ran out). Any number of callers may ask,
        before or after the load ended. What to do about a give-up (the exit
        code, the message) is the service's start-up policy, not the store's."""

    def not_ready():
        """Why the snapshot cannot be vouched for right now, or None when it can.

        The reason is the text ``/readyz`` answers (CONTRACT 5.2):
        ``"config not loaded yet"`` before the first load ended, ``"etcd
        unreachable"`` while a store that follows a server (etcd's watch) is
        cut off from it and serves its last snapshot. A store that holds its
        own state (embedded) is always ready once loaded. Cheap: probes call
        it every few seconds and it does no I/O."""

    def seed_demo():
        """Put the README's demo model and API key into a brand-new store
        (``deployment.store.seed_demo``). A store shared with others (etcd,
        where AISIX and other gateways read and write) seeds nothing."""

    def stop():
        """Stop watching / release resources; returns a Deferred."""

    def list(segment):
        """Deferred list of StoredEntry of one kind ("models"/"apikeys"), in key order."""

    def get(segment, id):
        """Deferred StoredEntry or None."""

    def put(segment, id, value):
        """Store ``value`` (already validated and re-serialized) at ``id``.

        Fails with DuplicateError when another id of that kind holds the same
        unique field (checked atomically against the store itself). Fires with
        ``(StoredEntry, created: bool)``."""

    def delete(segment, id):
        """Deferred deleted StoredEntry, or None when there was none."""

    def add_listener(callback):
        """Call ``callback(snapshot)`` after every snapshot swap."""
