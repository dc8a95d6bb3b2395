"""Per-request state that the proxy and every hook share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted_gw.config.entities import ApiKey, Model
from twisted_gw.config.snapshot import Snapshot
from twisted_gw.errors import GatewayError
from twisted_gw.hooks.interfaces import IRequestTrace


@dataclass(frozen=True)
class UpstreamFailure:
    """How one upstream attempt failed, for the log (CONTRACT 5.4): made only
    when it did, so a request that succeeds builds none.

    ``host`` is ``host[:port]`` of the deployment's URL (never its path, query
    string or credentials), None for an in-process provider; ``cause`` is
    what happened (``connection refused``, ``timeout after 30000 ms``,
    ``status 503``, ``stream cut: ...``), never the upstream's own text."""

    attempt: int  # the attempt's number in the request, from 1
    target: str  # ``<model name>#<deployment index>``, as ``RequestContext.target``
    host: str | None
    cause: str


@dataclass
class RequestContext:
    """Everything known about one proxy request, from auth to the last byte.

    The snapshot is taken once, at the start; ``finalized`` guards the
    exactly-once finalize stage.
    """

    request_id: str
    started: float
    method: str
    path: str
    endpoint: str  # the matched route, or "-"
    client: str
    snapshot: Snapshot
    api_key: ApiKey | None = None
    model_name: str | None = None
    model: Model | None = None
    body: dict | None = None
    stream: bool = False
    status: int = 0
    usage: dict | None = None
    #: how it ended, for the access log: ok, done, empty, upstream_cut,
    #: upstream_error, timeout, client_gone, rejected
    end_reason: str | None = None
    first_token_at: float | None = None
    #: when the upstream call started and when its last byte came (LLM latency)
    upstream_started: float | None = None
    upstream_finished: float | None = None
    finished_at: float | None = None
    #: headers hooks want on the response (added before the first byte)
    response_headers: dict[str, str] = field(default_factory=dict)
    #: per-hook scratch space, keyed by hook name
    state: dict[str, Any] = field(default_factory=dict)
    finalized: bool = False
    #: the client's connection was lost before the response was finished
    client_gone: bool = False
    #: routing (CONTRACT 5.1): upstream attempts made, the deployment of the
    #: last (``<model name>#<index>``), each attempt's (target, outcome) and
    #: the targets an attempt of this request put in cooldown
    attempts: int = 0
    target: str | None = None
    attempt_outcomes: list[tuple[str, str]] = field(default_factory=list)
    cooldowns: list[str] = field(default_factory=list)
    #: this request's trace (CONTRACT 5.3); None when tracing is off, and
    #: then nothing on the request's path does any tracing work
    trace: IRequestTrace | None = None
    #: the error the request was answered with (a JSON error), None otherwise
    error: GatewayError | None = None
    #: the last upstream attempt that failed, and how (CONTRACT 5.4)
    upstream_failure: UpstreamFailure | None = None
    #: the deployment of the last upstream attempt (the one that answered,
    #: when one did): its price is the request's (issue 17)
    deployment: Model | None = None
    #: spend (issue 17): the model has a price, so the relay counts the
    #: characters it relays (for an estimate when no usage comes); set by
    #: the budget hook, False costs the relay one attribute check
    priced: bool = False
    relayed_chars: int = 0
    #: what the request cost in USD, set at finalize by the budget hook
    #: before the metrics and access-log hooks run: None when it never
    #: reached a priced upstream (refused, unpriced); ``cost_estimated``:
    #: no usage came and the cost is the estimate of twisted_gw.spend.prices
    cost_usd: float | None = None
    cost_estimated: bool = False
