"""Budget store on Redis (issue 17), so several gateways share one budget.

One round trip to reserve and one to settle, each a Lua script (atomic on
the server), over the rate limiter's connection. A window is a hash
(``spent``, ``reserved``) at ``<prefix>:budget:<key id>:<period>:<start>``,
with each member's reservation in ``...:r`` and its expiry in ``...:e``: the
reservation of a gateway that died is given back after ``reservation_ttl``
instead of holding budget for ever. The keys expire a day after their
window ends (``total`` never), and a window that rolled over is a new key
that starts at 0.

Redis down: as the rate limiter (``deployment.redis.on_error``): by default
the request goes through without a budget check (a warning at most once a
minute, ``twisted_gw_ratelimit_store_errors_total``), or 503
``budget_unavailable``; a call never waits longer than ``timeout``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from twisted_gw.errors import GatewayError
from twisted_gw.redis_calls import RedisScripts
from twisted_gw.spend.interfaces import IBudgetStore, Reservation

log = Logger()

# KEYS: none (the names are built from ARGV[1], as the rate limiter's are)
# ARGV: base, member, amount, limit, ttl (0: none), reservation ttl
RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local k, kr, ke = ARGV[1], ARGV[1] .. ':r', ARGV[1] .. ':e'
local expired = redis.call('ZRANGEBYSCORE', ke, '-inf', now)
for _, m in ipairs(expired) do
  local a = redis.call('HGET', kr, m)
  if a then
    redis.call('HINCRBY', k, 'reserved', '-' .. a)
    redis.call('HDEL', kr, m)
  end
  redis.call('ZREM', ke, m)
end
local spent = tonumber(redis.call('HGET', k, 'spent') or '0')
local reserved = tonumber(redis.call('HGET', k, 'reserved') or '0')
if reserved < 0 then reserved = 0 end
local amount, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local left = limit - spent - reserved
if left <= 0 or amount > left then return {0, string.format('%.0f', left)} end
redis.call('HINCRBY', k, 'reserved', ARGV[3])
redis.call('HINCRBY', kr, ARGV[2], ARGV[3])
redis.call('ZADD', ke, now + tonumber(ARGV[6]), ARGV[2])
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('EXPIRE', k, ttl); redis.call('EXPIRE', kr, ttl); redis.call('EXPIRE', ke, ttl)
end
return {1, string.format('%.0f', left - amount)}
"""

# ARGV: base, member, cost, ttl (0: none)
SETTLE = """
local k, kr, ke = ARGV[1], ARGV[1] .. ':r', ARGV[1] .. ':e'
local a = redis.call('HGET', kr, ARGV[2])
if a then
  redis.call('HINCRBY', k, 'reserved', '-' .. a)
  redis.call('HDEL', kr, ARGV[2])
  redis.call('ZREM', ke, ARGV[2])
end
if tonumber(ARGV[3]) > 0 then redis.call('HINCRBY', k, 'spent', ARGV[3]) end
local ttl = tonumber(ARGV[4])
if ttl > 0 then redis.call('EXPIRE', k, ttl) end
return 1
"""

# ARGV: base, limit
REMAINING = """
local v = redis.call('HMGET', ARGV[1], 'spent', 'reserved')
local reserved = tonumber(v[2] or '0')
if reserved < 0 then reserved = 0 end
return string.format('%.0f', tonumber(ARGV[2]) - tonumber(v[1] or '0') - reserved)
"""


def unavailable() -> GatewayError:
    return GatewayError(503, "Budget store unavailable", "budget_unavailable", reason="rejected")


def _int(text: Any) -> int:
    """A Lua number written with ``%.0f`` (bytes or str) as an int."""
    if isinstance(text, bytes):
        text = text.decode()
    try:
        return int(text)
    except ValueError:
        return int(float(text))


@implementer(IBudgetStore)
class RedisBudgetStore(RedisScripts):
    """Budgets in Redis, shared by every gateway with the same ``prefix``."""

    _log = log
    _warning = "budget store (Redis) {what} failed: {error}; budgeted requests are {policy}"
    _open_policy = "let through unchecked"

    def __init__(
        self,
        connection: Any,
        reactor: Any,
        prefix: str = "twisted-gw",
        timeout: float = 1.0,
        fail_open: bool = True,
        reservation_ttl: float = 3600.0,
        metrics: Any = None,
    ) -> None:
        self.redis = connection
        self.reactor = reactor
        self.prefix = prefix
        self.timeout = timeout
        self.fail_open = fail_open
        self.reservation_ttl = reservation_ttl
        self.metrics = metrics
        self._settling: set[defer.Deferred] = set()

    def _base(self, scope: str) -> str:
        return f"{self.prefix}:budget:{scope}"

    def reserve(self, scope: str, member: str, amount: int, limit: int, ttl: int) -> defer.Deferred:
        args = [self._base(scope), member, amount, limit, ttl, self.reservation_ttl]
        d = self._run(RESERVE, args)
        d.addCallback(lambda reply: Reservation(int(reply[0]) == 1, _int(reply[1])))
        d.addErrback(self._reserve_failed, scope, member, ttl)
        return d

    def reserve_now(self, scope: str, member: str, amount: int, limit: int, ttl: int) -> None:
        """Never decided at once: every reservation is a round trip to Redis."""

    def _reserve_failed(self, failure: Any, scope: str, member: str, ttl: int) -> Any:
        """A reservation that did not answer may still run on Redis: give
        ``member``'s back once the call is surely over. A cancellation (the
        client left) stays one."""
        self.reactor.callLater(self.timeout, self.settle, scope, member, 0, ttl)
        if failure.check(defer.CancelledError):
            return failure
        self._warn_failed(failure, "reserve")
        if not self.fail_open:
            raise unavailable()
        return None  # no reservation: the request goes through unchecked

    def remaining(self, scope: str, limit: int) -> defer.Deferred:
        d = self._run(REMAINING, [self._base(scope), limit])
        d.addCallback(_int)
        d.addErrback(lambda f: self._warn_failed(f, "read") or limit)
        return d

    def settle(self, scope: str, member: str, cost: int, ttl: int) -> defer.Deferred:
        return self._settle_call(SETTLE, [self._base(scope), member, max(cost, 0), ttl])

    def close(self) -> defer.Deferred:
        """Fires once the settles in flight are done (each bounded by ``timeout``);
        the connection is the rate limiter's, which closes it."""
        return self._settles_done()
