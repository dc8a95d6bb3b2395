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

A settle has no answer (nothing in it is news to the worker): one AMP
message a request fewer each way, a third of what a limited request cost
the supervisor. Messages on one connection are handled in order, so a
worker that stops waits for one :class:`Sync` answer instead, which comes
once every settle it sent was applied. A plan crosses the wire as JSON
encoded once per plan, and is decoded once per distinct encoding.
"""

from __future__ import annotations

from typing import Any, ClassVar

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from twisted_gw._lazytls import without_openssl
from twisted_gw.errors import GatewayError
from twisted_gw.jsonutil import dumps, loads
from twisted_gw.ratelimit.interfaces import IRateLimitStore
from twisted_gw.ratelimit.limits import Concurrency, Outcome, Plan, Window
from twisted_gw.spend.interfaces import IBudgetStore, Reservation

with without_openssl():  # AMP's StartTLS is never used here (see twisted_gw._lazytls)
    from twisted.protocols import amp

log = Logger()

#: one AMP value holds at most 65,535 bytes; larger ones are sent in parts
_PART = 0xFFFF
#: plans remembered on each side of a connection, encoded and decoded (one a
#: pair of key and model; past this many the memory starts afresh)
_PLANS = 10000


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
    requiresAnswer = False  # a stopping worker waits for a Sync instead


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
    requiresAnswer = False  # a stopping worker waits for a Sync instead


class Sync(amp.Command):
    """Answered once everything sent before it on the connection was handled
    (the settles, which have no answer of their own)."""

    arguments: ClassVar[list] = []
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
        self._plans: dict[bytes, Plan] = {}

    def _plan(self, data: bytes) -> Plan:
        plan = self._plans.get(data)
        if plan is None:
            if len(self._plans) >= _PLANS:
                self._plans.clear()
            plan = self._plans[data] = plan_from(data)
        return plan

    @Acquire.responder
    def acquire(self, plan: bytes, member: str) -> dict:
        parsed = self._plan(plan)
        outcome = self.limiter.acquire_now(parsed, member)
        if outcome.allowed and parsed.concurrency:
            self.held.setdefault(member, []).extend(parsed.concurrency)
        return {"outcome": outcome_bytes(outcome)}

    @Settle.responder
    def settle(self, plan: bytes, member: str, tokens: int) -> dict:
        try:
            parsed = self._plan(plan)
            held = self.held.get(member, [])
            released = []
            for gate in parsed.concurrency:  # only slots this worker still holds
                if gate in held:
                    held.remove(gate)
                    released.append(gate)
            if not held:
                self.held.pop(member, None)
            self.limiter.settle(Plan(parsed.windows, tuple(released)), member, tokens)
        except Exception:  # noqa: BLE001 - no answer to carry it: logged, the connection kept
            log.failure("settling the rate limits of {member} failed", member=member)
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
        try:
            self.budgets.settle(scope, member, cost, ttl)
        except Exception:  # noqa: BLE001 - no answer to carry it: logged, the connection kept
            log.failure("settling the budget of {member} failed", member=member)
        return {}

    @Sync.responder
    def sync(self) -> dict:
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


def tell(protocol: amp.AMP, command: type[amp.Command], what: str, **arguments: Any) -> None:
    """Send ``command``, which has no answer, now (:func:`send_now`); with
    the connection gone it cannot arrive, which is a warning."""
    if protocol.transport is None:
        log.warn("{what} failed: the connection to the supervisor is closed", what=what)
        return
    protocol.callRemote(command, **arguments)
    send_now(protocol)


def sync(protocol: amp.AMP) -> defer.Deferred:
    """Fires once the supervisor handled everything sent before on
    ``protocol`` (at once when the connection is gone: nothing more arrives)."""
    if protocol.transport is None:
        return defer.succeed(None)
    d = protocol.callRemote(Sync)
    send_now(protocol)
    return d.addErrback(lambda _: None)


@implementer(IRateLimitStore)
class RemoteRateLimitStore:
    """The supervisor's in-memory limiter, one AMP round trip per check.

    ``slots_held`` counts this worker's own slots, so the gauge summed over
    the live workers is the gateway's total."""

    def __init__(self, protocol: amp.AMP) -> None:
        self.protocol = protocol
        self._slots = 0
        #: id(plan) -> (plan, its bytes); the hook's plans are few and reused
        self._wire: dict[int, tuple[Plan, bytes]] = {}

    def _bytes(self, plan: Plan) -> bytes:
        hit = self._wire.get(id(plan))
        if hit is not None and hit[0] is plan:
            return hit[1]
        if len(self._wire) >= _PLANS:
            self._wire.clear()
        data = plan_bytes(plan)
        self._wire[id(plan)] = (plan, data)
        return data

    def acquire_now(self, plan: Plan, member: str = "") -> None:
        return None  # always a round trip

    def acquire(self, plan: Plan, member: str) -> defer.Deferred:
        d = self.protocol.callRemote(Acquire, plan=self._bytes(plan), member=member)
        return d.addCallback(self._acquired, plan)

    def _acquired(self, answer: dict, plan: Plan) -> Outcome:
        outcome = outcome_from(answer["outcome"])
        if outcome.allowed:
            self._slots += len(plan.concurrency)
        return outcome

    def settle_now(self, plan: Plan, member: str, tokens: int) -> bool:
        return False  # always a round trip

    def settle(self, plan: Plan, member: str, tokens: int) -> defer.Deferred:
        """Sent at once, given back before the client can see its answer end;
        no answer is waited for (see the module docstring)."""
        self._slots -= len(plan.concurrency)
        data = self._bytes(plan)
        tell(self.protocol, Settle, "settling rate limits", plan=data, member=member, tokens=tokens)
        return defer.succeed(None)

    def close(self) -> defer.Deferred:
        """Wait until the supervisor applied every settle sent (their slots
        must reach it before this worker's connection closes)."""
        return sync(self.protocol)

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
        """Sent at once, settled before the client can see its answer end; no
        answer is waited for (see the module docstring)."""
        self._held.discard(member)
        arguments = {"scope": scope, "member": member, "cost": cost, "ttl": ttl}
        tell(self.protocol, BudgetSettle, "settling a budget", **arguments)
        return defer.succeed(None)

    def close(self) -> defer.Deferred:
        """Wait until the supervisor applied every settle sent."""
        return sync(self.protocol)

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
        data = dumps(messages)
        tell(
            self.protocol,
            HistoryPut,
            "storing a response",
            rid=response_id,
            owner=owner,
            messages=data,
        )

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
