"""Rate-limit store on Redis, so several gateways share one set of counters.

One round trip per check and one per settle, each a Lua script (atomic on the
server): the check reads every window and concurrency gate of the request's
plan and consumes only when all pass, exactly like the in-memory store. Time
is Redis's own (``TIME``), so gateways with skewed clocks agree on windows.
Concurrency slots are members of a sorted set scored by an expiry, so the
slots of a gateway that died are reclaimed after ``slot_ttl`` instead of
leaking forever.

Redis down: by default the limiter fails open (the request goes through
without limits, a warning at most once a minute, and the
``twisted_gw_ratelimit_store_errors_total`` counter); ``on_error: reject``
answers 503 instead. Either way a call never waits longer than ``timeout``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from twisted_gw.errors import GatewayError
from twisted_gw.ratelimit.interfaces import IRateLimitStore
from twisted_gw.ratelimit.limits import Outcome, Plan
from twisted_gw.redis_calls import RedisScripts

log = Logger()

ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local nw, ng = tonumber(ARGV[1]), tonumber(ARGV[2])
local i = 3
local wkey, wlim, wsize, wtok, used = {}, {}, {}, {}, {}
for w = 1, nw do
  local size = tonumber(ARGV[i + 2])
  wkey[w] = ARGV[i] .. ':' .. string.format('%d', math.floor(now / size) * size)
  wlim[w] = tonumber(ARGV[i + 1]); wsize[w] = size; wtok[w] = ARGV[i + 3]
  used[w] = tonumber(redis.call('GET', wkey[w]) or '0')
  i = i + 4
end
local gkey, glim, gmem, gttl, inflight = {}, {}, {}, {}, {}
for g = 1, ng do
  gkey[g] = ARGV[i]; glim[g] = tonumber(ARGV[i + 1]); gmem[g] = ARGV[i + 2]; gttl[g] = tonumber(ARGV[i + 3])
  redis.call('ZREMRANGEBYSCORE', gkey[g], '-inf', now)
  inflight[g] = redis.call('ZCARD', gkey[g])
  i = i + 4
end
local status, at = 0, 0
for w = 1, nw do
  if used[w] >= wlim[w] then status, at = 1, w; break end
end
if status == 0 then
  for g = 1, ng do
    if inflight[g] >= glim[g] then status, at = 2, g; break end
  end
end
if status == 0 then
  for w = 1, nw do
    if wtok[w] == '0' then
      used[w] = redis.call('INCR', wkey[w])
      redis.call('EXPIRE', wkey[w], wsize[w] + 60)
    end
  end
  for g = 1, ng do
    redis.call('ZADD', gkey[g], now + gttl[g], gmem[g])
    redis.call('EXPIRE', gkey[g], gttl[g] + 60)
    inflight[g] = inflight[g] + 1
  end
end
local out = {status, at, string.format('%.6f', now)}
for w = 1, nw do out[#out + 1] = used[w] end
for g = 1, ng do out[#out + 1] = inflight[g] end
return out
"""

SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens = tonumber(ARGV[1])
local nw = tonumber(ARGV[2])
local i = 3
for w = 1, nw do
  local size = tonumber(ARGV[i + 1])
  if tokens > 0 then
    local key = ARGV[i] .. ':' .. string.format('%d', math.floor(now / size) * size)
    redis.call('INCRBY', key, tokens)
    redis.call('EXPIRE', key, size + 60)
  end
  i = i + 2
end
local ng = tonumber(ARGV[i])
i = i + 1
for g = 1, ng do
  redis.call('ZREM', ARGV[i], ARGV[i + 1])
  i = i + 2
end
return 1
"""


def parse_redis_url(url: str) -> dict[str, Any]:
    """``redis://[user:password@]host[:port][/db]`` as txredisapi arguments."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
    db = parts.path.strip("/")
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 6379,
        "dbid": int(db) if db else None,
        "password": unquote(parts.password) if parts.password else None,
        "username": unquote(parts.username) if parts.username else None,
        "ssl": parts.scheme == "rediss",
    }


def unavailable() -> GatewayError:
    return GatewayError(
        503, "Rate limiter unavailable", "rate_limit_unavailable", reason="rejected"
    )


@implementer(IRateLimitStore)
class RedisRateLimitStore(RedisScripts):
    """Counters in Redis, shared by every gateway with the same ``prefix``."""

    _log = log
    _warning = "rate-limit store (Redis) {what} failed: {error}; requests are {policy}"
    _open_policy = "let through without limits"

    def __init__(
        self,
        reactor: Any,
        url: str = "redis://127.0.0.1:6379",
        prefix: str = "twisted-gw",
        timeout: float = 1.0,
        fail_open: bool = True,
        slot_ttl: float = 3600.0,
        metrics: Any = None,
        connection: Any = None,
    ) -> None:
        self.reactor = reactor
        self.prefix = prefix
        self.timeout = timeout
        self.fail_open = fail_open
        self.slot_ttl = slot_ttl
        self.metrics = metrics
        self._settling: set[defer.Deferred] = set()
        if connection is None:
            import txredisapi

            args = parse_redis_url(url)
            ssl = args.pop("ssl")
            connection = txredisapi.lazyConnectionPool(
                poolsize=4,
                reconnect=True,
                connectTimeout=timeout,
                replyTimeout=timeout,
                ssl_context_factory=ssl,
                **args,
            )
        self.redis = connection

    def _base(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    def acquire(self, plan: Plan, member: str) -> defer.Deferred:
        args: list[Any] = [len(plan.windows), len(plan.concurrency)]
        for w in plan.windows:
            args += [self._base(f"{w.scope}:{w.id}:{w.kind}"), w.limit, w.size, int(w.is_tokens)]
        for g in plan.concurrency:
            args += [self._base(g.key), g.limit, member, self.slot_ttl]
        d = self._run(ACQUIRE, args)
        d.addCallback(self._outcome, plan)
        d.addErrback(self._check_failed, plan, member)
        return d

    def acquire_now(self, plan: Plan, member: str) -> None:
        """Never decided at once: every check is a round trip to Redis."""

    def settle_now(self, plan: Plan, member: str, tokens: int) -> bool:
        """Never done at once: every settle is a round trip to Redis."""
        return False

    def _check_failed(self, failure: Any, plan: Plan, member: str) -> Any:
        """A check that did not answer may still run on Redis (txredisapi calls
        cannot be withdrawn) and take concurrency slots nobody will give back:
        release ``member``'s slots once the call is surely over. A check
        cancelled because the client left stays a cancellation, so the
        request finalizes as client_gone instead of reaching the upstream."""
        if plan.concurrency:
            slots = Plan((), plan.concurrency)
            self.reactor.callLater(self.timeout, self.settle, slots, member, 0)
        if failure.check(defer.CancelledError):
            return failure
        return self._failed(failure, "check")

    @staticmethod
    def _outcome(reply: list, plan: Plan) -> Outcome:
        status, at, now = int(reply[0]), int(reply[1]), float(reply[2])
        nw = len(plan.windows)
        counts = [int(x) for x in reply[3:]]
        outcome = Outcome(now, counts[:nw], counts[nw:])
        if status == 1:
            outcome.rejected_window = at - 1
        elif status == 2:
            outcome.rejected_concurrency = at - 1
        return outcome

    def settle(self, plan: Plan, member: str, tokens: int) -> defer.Deferred:
        args: list[Any] = [tokens, len([w for w in plan.windows if w.is_tokens])]
        for w in plan.windows:
            if w.is_tokens:
                args += [self._base(f"{w.scope}:{w.id}:{w.kind}"), w.size]
        args.append(len(plan.concurrency))
        for g in plan.concurrency:
            args += [self._base(g.key), member]
        return self._settle_call(SETTLE, args)

    def _failed(self, failure: Any, what: str) -> Outcome:
        self._warn_failed(failure, what)
        if not self.fail_open and what == "check":
            raise unavailable()
        return Outcome(self.reactor.seconds())  # no counts: allowed, no headers, nothing to settle

    def close(self) -> defer.Deferred:
        """Disconnect once the settles in flight are done (each is bounded by
        ``timeout``), so a shutdown does not strand shared slots."""
        d = self._settles_done()
        d.addBoth(lambda _: self.redis.disconnect())
        return d
