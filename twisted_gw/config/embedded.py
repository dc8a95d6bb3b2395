"""The embedded config store: one local JSON file, written atomically.

Used when ``deployment.etcd`` is absent **[beyond]**, so the gateway runs on a
fresh machine with no other server. The whole state is small (models and keys)
and lives in memory; each write goes to a temp file that is fsynced and renamed
over the real one before memory changes, so a crash leaves either the old or
the new file, never half of one, and a failed write changes nothing.

With ``server.workers > 1`` every worker holds its own copy (``shared=True``):
each polls the file's identity (a stat every 50 ms on the reactor) and
reloads it when another worker replaced it, so an Admin API write reaches
every worker within 100 ms; and each write runs read-latest/modify/persist
under an exclusive ``fcntl.flock`` on ``<store>.lock``, re-reading the file
under the lock when it changed, so duplicate checks and revisions are always
against the latest state and no worker's update is lost. One process
(``shared=False``) does neither, as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from twisted_gw.config.entities import KINDS
from twisted_gw.config.interfaces import DuplicateError, IConfigStore, StoreError
from twisted_gw.config.snapshot import Snapshot, StoredEntry
from twisted_gw.observability.logsafe import escape

log = Logger()

FORMAT_VERSION = 1


class StoreFileError(Exception):
    """The store file cannot be used; the message names the file."""


def _identity(stat: os.stat_result) -> tuple[int, int, int]:
    """What changes when the file is replaced (a write renames a new file over it)."""
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _read_state(path: str) -> tuple[int, dict[str, StoredEntry]]:
    return _read_state_and_identity(path)[:2]  # type: ignore[return-value]


def _read_state_and_identity(
    path: str,
) -> tuple[int, dict[str, StoredEntry], tuple[int, int, int]]:
    """The state and the identity of the very file it was read from."""
    try:
        with open(path, "rb") as f:
            identity = _identity(os.fstat(f.fileno()))
            raw = json.loads(f.read())
    except OSError as e:
        raise StoreFileError(f"cannot read store file '{path}': {e.strerror}") from None
    except ValueError as e:
        raise StoreFileError(f"store file '{path}' is corrupt (not JSON: {e})") from None
    problem = f"store file '{path}' is corrupt"
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), dict):
        raise StoreFileError(f"{problem}: expected an object with 'revision' and 'entries'")
    revision = raw.get("revision")
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
        raise StoreFileError(f"{problem}: 'revision' must be a non-negative integer")
    entries: dict[str, StoredEntry] = {}
    for key, item in raw["entries"].items():
        parts = key.split("/")
        if len(parts) != 3 or parts[0] or parts[1] not in KINDS or not parts[2]:
            raise StoreFileError(f"{problem}: bad key {key!r}")
        if not isinstance(item, dict) or "value" not in item:
            raise StoreFileError(f"{problem}: entry {key!r} has no 'value'")
        ci, mi = item.get("created_index"), item.get("modified_index")
        for idx in (ci, mi):
            if isinstance(idx, bool) or not isinstance(idx, int) or not 0 < idx <= revision:
                raise StoreFileError(
                    f"{problem}: entry {key!r} has a bad created_index/modified_index"
                )
        entries[key] = StoredEntry(key, item["value"], ci, mi)
    return revision, entries, identity


@implementer(IConfigStore)
class EmbeddedStore:
    """Models and API keys in a local file next to the config."""

    #: seconds between two looks at the file, when shared
    POLL_INTERVAL = 0.05

    def __init__(self, path: str, shared: bool = False, reactor: Any = None) -> None:
        self.path = path
        #: several worker processes use the file: watch it, lock writes
        self.shared = shared
        self.reactor = reactor
        self._revision = 0
        self._entries: dict[str, StoredEntry] = {}
        self._listeners: list[Callable[[Snapshot], None]] = []
        self.snapshot = Snapshot()
        self._seen: tuple[int, int, int] | None = None  # the file as last read or written
        self._poll: Any = None

    # -- loading -----------------------------------------------------------

    def load(self) -> bool:
        """Read the file synchronously (start-up must fail fast on a bad file).

        Returns False when there was no file yet. Raises StoreFileError."""
        if not os.path.exists(self.path):
            return False
        self._revision, self._entries, self._seen = _read_state_and_identity(self.path)
        self._swap()
        return True

    def start(self) -> defer.Deferred:
        if self.shared and self._poll is None:
            from twisted.internet.task import LoopingCall

            self._poll = LoopingCall(self.refresh)
            if self.reactor is not None:
                self._poll.clock = self.reactor
            self._poll.start(self.POLL_INTERVAL, now=False).addErrback(
                lambda f: log.failure("store file watch stopped", f)
            )
        return defer.succeed(self.snapshot)

    def refresh(self) -> bool:
        """Reload the file if another process replaced it; True when the
        snapshot changed. A file that cannot be read or is corrupt keeps the
        current snapshot (one warning per version of the file)."""
        try:
            identity = _identity(os.stat(self.path))
        except OSError:
            return False  # not written yet (a brand-new store)
        if identity == self._seen:
            return False
        try:
            revision, entries, identity = _read_state_and_identity(self.path)
        except StoreFileError as e:
            self._seen = identity
            log.warn("store file not reloaded, keeping the last good one: {e}", e=str(e))
            return False
        self._seen = identity
        if revision == self._revision:
            return False
        self._revision, self._entries = revision, entries
        self._swap()
        return True

    def when_loaded(self) -> defer.Deferred:
        """Loaded already: :meth:`load` runs in build, before the service
        starts, so a bad file fails start-up before a daemon forks."""
        return defer.succeed(self.snapshot)

    def stop(self) -> defer.Deferred:
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        self._poll = None
        return defer.succeed(None)

    @contextlib.contextmanager
    def _latest(self) -> Iterator[None]:
        """Shared: hold ``<store>.lock`` and work on the file's latest state.

        The lock is held for one read-modify-persist (a few ms, fsync
        included), blocking this process's reactor meanwhile: writes come
        from the Admin API and are rare, and a correct revision beats a
        non-blocking one."""
        if not self.shared:
            yield
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise StoreError(f"store lock failed: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.refresh()
            yield
        finally:
            os.close(fd)  # releases the lock

    def not_ready(self) -> str | None:
        """Never: the file is read in build, and the state is this process's own."""
        return None

    def seed_demo(self) -> None:
        """Create the demo model and key of the README on a brand-new store."""
        with self._latest():
            self._seed_demo()

    def _seed_demo(self) -> None:
        self._write_entry(
            "models", "demo", {"name": "demo", "model": "mock/demo", "provider_config": {}}
        )
        self._write_entry("apikeys", "demo", {"key": "sk-demo-key", "allowed_models": ["demo"]})
        log.info(
            "seeded the demo model 'demo' and the demo API key (id 'demo') into {path}",
            path=escape(self.path),
        )

    # -- IConfigStore --------------------------------------------------------

    def add_listener(self, callback: Callable[[Snapshot], None]) -> None:
        self._listeners.append(callback)

    def list(self, segment: str) -> defer.Deferred:
        prefix = f"/{segment}/"
        return defer.succeed([e for k, e in sorted(self._entries.items()) if k.startswith(prefix)])

    def get(self, segment: str, id: str) -> defer.Deferred:
        return defer.succeed(self._entries.get(f"/{segment}/{id}"))

    def put(self, segment: str, id: str, value: dict) -> defer.Deferred:
        try:
            with self._latest():
                return defer.succeed(self._put(segment, id, value))
        except (DuplicateError, StoreError) as e:
            return defer.fail(e)

    def delete(self, segment: str, id: str) -> defer.Deferred:
        try:
            with self._latest():
                return defer.succeed(self._delete(segment, id))
        except StoreError as e:
            return defer.fail(e)

    def _delete(self, segment: str, id: str) -> StoredEntry | None:
        key = f"/{segment}/{id}"
        old = self._entries.get(key)
        if old is None:
            return None
        entries = dict(self._entries)
        del entries[key]
        self._commit(self._revision + 1, entries)
        return old

    # -- internals -----------------------------------------------------------

    def _put(self, segment: str, id: str, value: dict) -> tuple[StoredEntry, bool]:
        field = KINDS[segment].unique_field
        key = f"/{segment}/{id}"
        prefix = f"/{segment}/"
        for other_key, other in self._entries.items() if field is not None else ():
            if (
                other_key != key
                and other_key.startswith(prefix)
                and isinstance(other.value, dict)
                and other.value.get(field) == value.get(field)
            ):
                raise DuplicateError(KINDS[segment].duplicate)
        return self._write_entry(segment, id, value)

    def _write_entry(self, segment: str, id: str, value: dict) -> tuple[StoredEntry, bool]:
        key = f"/{segment}/{id}"
        revision = self._revision + 1
        old = self._entries.get(key)
        entry = StoredEntry(key, value, old.created_index if old else revision, revision)
        entries = dict(self._entries)
        entries[key] = entry
        self._commit(revision, entries)
        return entry, old is None

    def _commit(self, revision: int, entries: dict[str, StoredEntry]) -> None:
        """Persist, then swap memory (a failed write changes nothing)."""
        self._persist(revision, entries)
        self._revision = revision
        self._entries = entries
        self._swap()

    def _persist(self, revision: int, entries: dict[str, StoredEntry]) -> None:
        """Write the file (temp + fsync + rename + dir fsync); StoreError if not."""
        doc: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "revision": revision,
            "entries": {
                k: {
                    "value": e.value,
                    "created_index": e.created_index,
                    "modified_index": e.modified_index,
                }
                for k, e in sorted(entries.items())
            },
        }
        data = json.dumps(doc, indent=1, ensure_ascii=False).encode()
        directory = os.path.dirname(os.path.abspath(self.path))
        tmp: str | None = None
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".twisted-gw-store.", dir=directory)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            tmp = None
            if self.shared:  # ours: the watch need not read it back
                self._seen = _identity(os.stat(self.path))
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            raise StoreError(f"store write failed: {e.strerror or e}") from None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def _swap(self) -> None:
        self.snapshot = Snapshot.build(self._entries.values(), self._revision, source=self.path)
        for callback in self._listeners:
            callback(self.snapshot)
