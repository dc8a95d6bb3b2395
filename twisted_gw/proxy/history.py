"""The Responses API's history store (CONTRACT-NEXT 3.4, **[ours]** bounds).

AISIX keeps every response's conversation in a process map that never
forgets and lets any key continue any response. Here the store is bounded by
count and by age (oldest first out), and a response belongs to the API key
that created it: to another key it does not exist. In memory, per node; a
``previous_response_id`` answered by another gateway is not found.
"""

from __future__ import annotations

from collections import OrderedDict

from twisted.internet.interfaces import IReactorTime

#: defaults: how many responses are kept, and for how long (seconds)
DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_AGE = 24 * 3600.0


class ResponseHistory:
    """response id -> (owner key id, stored at, the chat messages so far)."""

    def __init__(
        self,
        clock: IReactorTime,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_age: float = DEFAULT_MAX_AGE,
    ) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self.max_age = max_age
        self._entries: OrderedDict[str, tuple[str, float, list[dict]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, response_id: str, owner: str, messages: list[dict]) -> None:
        """Keep ``messages`` for the key ``owner`` (its store id)."""
        now = self.clock.seconds()
        self._entries[response_id] = (owner, now, messages)
        self._entries.move_to_end(response_id)
        self._expire(now)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get(self, response_id: str, owner: str) -> list[dict] | None:
        """The messages of ``response_id`` if ``owner`` created it and it is
        not too old; None otherwise (the same None: nothing leaks)."""
        self._expire(self.clock.seconds())
        entry = self._entries.get(response_id)
        if entry is None or entry[0] != owner:
            return None
        return entry[2]

    def _expire(self, now: float) -> None:
        horizon = now - self.max_age
        entries = self._entries
        while entries:
            first = next(iter(entries.values()))
            if first[1] > horizon:
                break
            entries.popitem(last=False)
