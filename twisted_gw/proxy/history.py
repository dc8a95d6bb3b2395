"""The Responses API's history store (CONTRACT-NEXT 3.4, **[ours]** bounds).

AISIX keeps every response's conversation in a process map that never
forgets and lets any key continue any response. Here the store is bounded by
count and by age (oldest first out), and a response belongs to the API key
that created it: to another key it does not exist. In memory per node, or
in Redis (when ``deployment.redis`` is configured), shared by the gateways.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_gw.errors import GatewayError
from twisted_gw.jsonutil import dumps, loads
from twisted_gw.observability.logsafe import escape

log = Logger()

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


#: one put: the entry with its age bound, its place in the index, then the
#: index trimmed to its bounds (expired first, then the oldest past the count)
_PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[2]))
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if extra > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, extra - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1)
  redis.call('DEL', unpack(old))
end
return 1
"""


class RedisResponseHistory:
    """The history in Redis, shared by every gateway with the same prefix
    (a conversation may continue on any of them): one key per response,
    expiring after ``max_age``, and one index that keeps the count bounded.
    A lookup Redis cannot answer is a 503, never a wrong "not found"."""

    def __init__(
        self,
        redis: Any,
        clock: IReactorTime,
        prefix: str = "twisted-gw",
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_age: float = DEFAULT_MAX_AGE,
        timeout: float = 1.0,
    ) -> None:
        self.redis = redis
        #: no call waits longer (``deployment.redis.timeout``)
        self.timeout = timeout
        self.clock = clock
        self.prefix = prefix
        self.max_entries = max_entries
        self.max_age = max_age
        self._index = f"{prefix}:responses"

    def _key(self, response_id: str) -> str:
        return f"{self.prefix}:response:{response_id}"

    def put(self, response_id: str, owner: str, messages: list[dict]) -> None:
        value = dumps({"owner": owner, "messages": messages}).decode()
        args = [value, int(self.max_age * 1000), int(self.clock.seconds() * 1000), self.max_entries]
        d = self.redis.eval(_PUT, [self._key(response_id), self._index], args)
        d.addTimeout(self.timeout, self.clock)
        d.addErrback(
            lambda f: log.warn(
                "response {rid} not stored in Redis: {error}",
                rid=escape(response_id),
                error=escape(f.getErrorMessage()),
            )
        )

    def get(self, response_id: str, owner: str) -> defer.Deferred:
        d = self.redis.get(self._key(response_id))
        d.addTimeout(self.timeout, self.clock)
        return d.addCallbacks(self._found, self._unavailable, callbackArgs=(owner,))

    @staticmethod
    def _found(value: Any, owner: str) -> list[dict] | None:
        if value is None:
            return None
        try:
            doc = loads(value if isinstance(value, bytes | str) else str(value))
        except ValueError:
            return None
        if not isinstance(doc, dict) or doc.get("owner") != owner:
            return None
        messages = doc.get("messages")
        return messages if isinstance(messages, list) else None

    @staticmethod
    def _unavailable(failure: Any) -> None:
        log.warn(
            "Responses history lookup failed: {error}", error=escape(failure.getErrorMessage())
        )
        raise GatewayError(503, "Response history unavailable", "history_unavailable")
