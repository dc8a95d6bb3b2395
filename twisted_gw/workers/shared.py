"""State the workers share, hosted by the supervisor and reached over AMP.

With ``server.workers > 1`` and no Redis, the in-memory rate-limit counters
and the Responses history must still be one per gateway, not one per worker:
a limit of rpm 5 is 5 for the gateway, never 5 per worker (CONTRACT 4.5).
So the supervisor keeps the one :class:`MemoryRateLimitStore`, the one
:class:`ResponseHistory` and the one budget store (issue 17: a key's budget
is the gateway's, not each worker's), and serves them on a unix socket with
:class:`SharedStateServer`; each worker holds a :class:`RemoteRateLimitStore`,
a :class:`RemoteResponseHistory` and a :class:`RemoteBudgetStore` that
forward every call.

A worker's concurrency slots and budget reservations are tracked per
connection: when a worker dies its connection closes and
:meth:`SharedStateServer.connectionLost` gives them back, so a crash never
strands a slot or holds a budget.
"""

from __future__ import annotations

from typing import Any, ClassVar

from twisted.internet import defer
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_gw.errors import GatewayError
from twisted_gw.jsonutil import dumps, loads
from twisted_gw.ratelimit.interfaces import IRateLimitStore
from twisted_gw.ratelimit.limits import Concurrency, Outcome, Plan, Window
from twisted_gw.spend.interfaces import IBudgetStore, Reservation

log = Logger()

#: one AMP value holds at most 65,535 bytes; larger ones are sent in parts
_PART = 0xFFFF


class Blob(amp.Argument):
    """Bytes of any length, sent as ``name`` (the count) and ``name.0``...

    Needed for the Responses history: a conversation can exceed one AMP
    value."""

    def toBox(self, name: bytes, strings: Any, objects: Any, proto: Any) -> None:
        value = objects[amp._wireNameToPythonIdentifier(name)]
        parts = [value[i : i + _PART] for i in range(0, len(value), _PART)] or [b""]
        strings[name] = str(len(parts)).encode()
        for i, part in enumerate(parts):
            strings[name + b".%d" % i] = part

    def fromBox(self, name: bytes, strings: Any, objects: Any, proto: Any) -> None:
        count = int(strings[name])
        objects[amp._wireNameToPythonIdentifier(name)] = b"".join(
            strings[name + b".%d" % i] for i in range(count)
        )


class Acquire(amp.Command):
    arguments: ClassVar[list] = [(b"plan", Blob()), (b"member", amp.Unicode())]
    response: ClassVar[list] = [(b"outcome", Blob())]


class Settle(amp.Command):
    arguments: ClassVar[list] = [
        (b"plan", Blob()),
        (b"member", amp.Unicode()),
        (b"tokens", amp.Integer()),
    ]
    response: ClassVar[list] = []


class HistoryPut(amp.Command):
    arguments: ClassVar[list] = [
        (b"rid", amp.Unicode()),
        (b"owner", amp.Unicode()),
        (b"messages", Blob()),
    ]
    response: ClassVar[list] = []
    requiresAnswer = False


class HistoryGet(amp.Command):
    arguments: ClassVar[list] = [(b"rid", amp.Unicode()), (b"owner", amp.Unicode())]
    response: ClassVar[list] = [(b"messages", Blob())]  # b"" when there is none


class BudgetReserve(amp.Command):
    arguments: ClassVar[list] = [
        (b"scope", amp.Unicode()),
        (b"member", amp.Unicode()),
        (b"amount", amp.Integer()),
        (b"limit", amp.Integer()),
        (b"ttl", amp.Integer()),
    ]
    response: ClassVar[list] = [(b"ok", amp.Boolean()), (b"remaining", amp.Integer())]


class BudgetSettle(amp.Command):
    arguments: ClassVar[list] = [
        (b"scope", amp.Unicode()),
        (b"member", amp.Unicode()),
        (b"cost", amp.Integer()),
        (b"ttl", amp.Integer()),
    ]
    response: ClassVar[list] = []


class BudgetRemaining(amp.Command):
    arguments: ClassVar[list] = [(b"scope", amp.Unicode()), (b"limit", amp.Integer())]
    response: ClassVar[list] = [(b"remaining", amp.Integer())]


class Ready(amp.Command):
    """A worker tells the supervisor it serves (its store is loaded)."""

    arguments: ClassVar[list] = [(b"worker", amp.Integer())]
    response: ClassVar[list] = []


class Failed(amp.Command):
    """A worker could not start; ``message`` is why (the gateway's last line)."""

    arguments: ClassVar[list] = [(b"worker", amp.Integer()), (b"message", amp.Unicode())]
    response: ClassVar[list] = []


# -- the plan and the outcome on the wire ------------------------------------


def plan_bytes(plan: Plan) -> bytes:
    """A Plan as JSON: the limits, not the derived fields."""
    return dumps(
        {
            "w": [[w.scope, w.id, w.kind, w.limit] for w in plan.windows],
            "c": [[c.scope, c.id, c.limit, c.kind] for c in plan.concurrency],
        }
    )


def plan_from(data: bytes) -> Plan:
    doc = loads(data)
    return Plan(
        tuple(Window(*w) for w in doc["w"]),
        tuple(Concurrency(*c) for c in doc["c"]),
    )


def outcome_bytes(outcome: Outcome) -> bytes:
    return dumps(
        [
            outcome.now,
            outcome.used,
            outcome.in_flight,
            outcome.rejected_window,
            outcome.rejected_concurrency,
        ]
    )


def outcome_from(data: bytes) -> Outcome:
    now, used, in_flight, window, gate = loads(data)
    return Outcome(now, used, in_flight, window, gate)


class _QuietAMP(amp.AMP):
    """AMP without its two log lines per connection (a worker's connection
    is plumbing, not news; its start and its exit are logged by the supervisor)."""

    def makeConnection(self, transport: Any) -> None:
        self._transportPeer = transport.getPeer()
        self._transportHost = transport.getHost()
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Any) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None


# -- the supervisor's side ---------------------------------------------------


class SharedStateServer(_QuietAMP):
    """One worker's connection to the shared store and history.

    ``held`` is what this worker's requests hold: member (request id) ->
    the concurrency gates it took, so :meth:`connectionLost` can release
    them when the worker goes away without settling."""

    def __init__(
        self,
        limiter: Any,
        history: Any,
        on_ready: Any = None,
        on_failed: Any = None,
        budgets: IBudgetStore | None = None,
    ) -> None:
        super().__init__()
        self.limiter = limiter
        self.history = history
        self.on_ready = on_ready
        self.on_failed = on_failed
        self.budgets = budgets
        self.held: dict[str, list[Concurrency]] = {}
        #: member -> scope of this worker's budget reservations not yet settled
        self.reserved: dict[str, str] = {}

    @Acquire.responder
    def acquire(self, plan: bytes, member: str) -> dict:
        parsed = plan_from(plan)
        outcome = self.limiter.acquire_now(parsed, member)
        if outcome.allowed and parsed.concurrency:
            self.held.setdefault(member, []).extend(parsed.concurrency)
        return {"outcome": outcome_bytes(outcome)}

    @Settle.responder
    def settle(self, plan: bytes, member: str, tokens: int) -> dict:
        parsed = plan_from(plan)
        held = self.held.get(member, [])
        released = []
        for gate in parsed.concurrency:  # only slots this worker still holds
            if gate in held:
                held.remove(gate)
                released.append(gate)
        if not held:
            self.held.pop(member, None)
        self.limiter.settle(Plan(parsed.windows, tuple(released)), member, tokens)
        return {}

    @BudgetReserve.responder
    def budget_reserve(self, scope: str, member: str, amount: int, limit: int, ttl: int) -> dict:
        outcome = self.budgets.reserve_now(scope, member, amount, limit, ttl)
        if outcome.ok:
            self.reserved[member] = scope
        return {"ok": outcome.ok, "remaining": outcome.remaining}

    @BudgetSettle.responder
    def budget_settle(self, scope: str, member: str, cost: int, ttl: int) -> dict:
        self.reserved.pop(member, None)
        self.budgets.settle(scope, member, cost, ttl)
        return {}

    @BudgetRemaining.responder
    def budget_remaining(self, scope: str, limit: int) -> dict:
        return {"remaining": self.budgets.remaining(scope, limit)}

    @HistoryPut.responder
    def history_put(self, rid: str, owner: str, messages: bytes) -> dict:
        self.history.put(rid, owner, loads(messages))
        return {}

    @HistoryGet.responder
    def history_get(self, rid: str, owner: str) -> dict:
        messages = self.history.get(rid, owner)
        return {"messages": b"" if messages is None else dumps(messages)}

    @Ready.responder
    def ready(self, worker: int) -> dict:
        if self.on_ready is not None:
            self.on_ready(worker)
        return {}

    @Failed.responder
    def failed(self, worker: int, message: str) -> dict:
        if self.on_failed is not None:
            self.on_failed(worker, message)
        return {}

    def connectionLost(self, reason: Any) -> None:
        """The worker is gone (exited or killed): give back every slot its
        requests still held, so the gateway's concurrency stays exact."""
        for member, gates in self.held.items():
            self.limiter.settle(Plan((), tuple(gates)), member, 0)
        self.held = {}
        for member, scope in self.reserved.items():  # released: their cost is unknown
            self.budgets.settle(scope, member, 0, 0)
        self.reserved = {}
        super().connectionLost(reason)


# -- the worker's side -------------------------------------------------------


def send_now(protocol: amp.AMP) -> None:
    """Write what ``protocol`` has buffered to the supervisor now, not at the
    reactor's next write pass.

    A settle or a history put happens as a request ends, in the same turn
    that buffers the end of the client's answer. Sent at once, it reaches the
    supervisor before the client can even read that answer, so the client's
    next request (through another worker, say) finds the slot given back and
    the response stored, as with one process. Otherwise the two buffers
    would go out in either order."""
    transport = protocol.transport
    if transport is not None and getattr(transport, "connected", False):
        transport.doWrite()


@implementer(IRateLimitStore)
class RemoteRateLimitStore:
    """The supervisor's in-memory limiter, one AMP round trip per check.

    ``slots_held`` counts this worker's own slots, so the gauge summed over
    the live workers is the gateway's total."""

    def __init__(self, protocol: amp.AMP) -> None:
        self.protocol = protocol
        self._slots = 0
        self._settling: set[defer.Deferred] = set()

    def acquire_now(self, plan: Plan, member: str = "") -> None:
        return None  # always a round trip

    def acquire(self, plan: Plan, member: str) -> defer.Deferred:
        d = self.protocol.callRemote(Acquire, plan=plan_bytes(plan), member=member)
        return d.addCallback(self._acquired, plan)

    def _acquired(self, answer: dict, plan: Plan) -> Outcome:
        outcome = outcome_from(answer["outcome"])
        if outcome.allowed:
            self._slots += len(plan.concurrency)
        return outcome

    def settle_now(self, plan: Plan, member: str, tokens: int) -> bool:
        return False  # always a round trip

    def settle(self, plan: Plan, member: str, tokens: int) -> defer.Deferred:
        self._slots -= len(plan.concurrency)
        d = self.protocol.callRemote(Settle, plan=plan_bytes(plan), member=member, tokens=tokens)
        send_now(self.protocol)  # given back before the client can see its answer end
        self._settling.add(d)

        def done(result: Any) -> None:
            self._settling.discard(d)
            if isinstance(result, Failure):
                log.warn("settling rate limits failed: {e}", e=result.getErrorMessage())

        d.addBoth(done)
        return d

    def close(self) -> defer.Deferred:
        """Wait for the settles still on their way (their slots must reach
        the supervisor before this worker's connection closes)."""
        return defer.DeferredList(list(self._settling), consumeErrors=True)

    def slots_held(self) -> int:
        return self._slots


@implementer(IBudgetStore)
class RemoteBudgetStore:
    """The supervisor's in-memory budget store, one AMP round trip per
    reservation and per settle. ``held`` counts this worker's own
    reservations, so the gauge summed over the live workers is the gateway's."""

    def __init__(self, protocol: amp.AMP) -> None:
        self.protocol = protocol
        self._held: set[str] = set()
        self._settling: set[defer.Deferred] = set()

    def reserve_now(self, scope: str, member: str, amount: int, limit: int, ttl: int) -> None:
        return None  # always a round trip

    def reserve(self, scope: str, member: str, amount: int, limit: int, ttl: int) -> defer.Deferred:
        d = self.protocol.callRemote(
            BudgetReserve, scope=scope, member=member, amount=amount, limit=limit, ttl=ttl
        )
        return d.addCallback(self._reserved, member)

    def _reserved(self, answer: dict, member: str) -> Reservation:
        if answer["ok"]:
            self._held.add(member)
        return Reservation(answer["ok"], answer["remaining"])

    def remaining(self, scope: str, limit: int) -> defer.Deferred:
        d = self.protocol.callRemote(BudgetRemaining, scope=scope, limit=limit)
        return d.addCallback(lambda answer: answer["remaining"])

    def settle(self, scope: str, member: str, cost: int, ttl: int) -> defer.Deferred:
        self._held.discard(member)
        d = self.protocol.callRemote(BudgetSettle, scope=scope, member=member, cost=cost, ttl=ttl)
        send_now(self.protocol)  # settled before the client can see its answer end
        self._settling.add(d)

        def done(result: Any) -> None:
            self._settling.discard(d)
            if isinstance(result, Failure):
                log.warn("settling a budget failed: {e}", e=result.getErrorMessage())

        d.addBoth(done)
        return d

    def close(self) -> defer.Deferred:
        """Wait for the settles still on their way to the supervisor."""
        return defer.DeferredList(list(self._settling), consumeErrors=True)

    def held(self) -> int:
        return len(self._held)


class RemoteResponseHistory:
    """The supervisor's Responses history: a conversation may go on through
    any worker, as with one process (``get`` returns a Deferred, as the Redis
    history's does)."""

    def __init__(self, protocol: amp.AMP) -> None:
        self.protocol = protocol

    def put(self, response_id: str, owner: str, messages: list[dict]) -> None:
        """Sent at once, before the answer that names the response reaches
        its client: a client that continues it at once, through another
        worker, must find it (the transport would otherwise send it with
        the answer, in either order)."""
        self.protocol.callRemote(HistoryPut, rid=response_id, owner=owner, messages=dumps(messages))
        send_now(self.protocol)

    def get(self, response_id: str, owner: str) -> defer.Deferred:
        d = self.protocol.callRemote(HistoryGet, rid=response_id, owner=owner)
        return d.addCallbacks(self._found, self._unavailable)

    @staticmethod
    def _found(answer: dict) -> list[dict] | None:
        data = answer["messages"]
        return loads(data) if data else None

    @staticmethod
    def _unavailable(failure: Any) -> None:
        log.warn("Responses history lookup failed: {error}", error=failure.getErrorMessage())
        raise GatewayError(503, "Response history unavailable", "history_unavailable")


class WorkerAMP(_QuietAMP):
    """A worker's end of the connection to the supervisor.

    The connection lasts as long as the supervisor does: when it closes
    while the worker is not already stopping, the supervisor is gone (killed)
    and the worker stops too, draining like one process does."""

    def __init__(self, reactor: Any, worker: int, leftovers: str | None = None) -> None:
        super().__init__()
        self.reactor = reactor
        self.worker = worker
        #: the supervisor's directory (socket, metrics), removed if it cannot
        self.leftovers = leftovers
        self._stopping = False
        reactor.addSystemEventTrigger("before", "shutdown", self._stop_requested)

    def _stop_requested(self) -> None:
        self._stopping = True

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        if not self._stopping and self.reactor.running:
            log.warn("worker {id}: the supervisor went away; stopping", id=self.worker)
            if self.leftovers is not None:
                import shutil

                shutil.rmtree(self.leftovers, ignore_errors=True)
            self.reactor.stop()
