"""Routing: which deployment of a model an attempt goes to (CONTRACT 5.1).

The :class:`Router` holds what this node knows about each deployment (its
requests in flight, its recent failures, its cooldown); a :class:`Plan` is one
request's walk over one model's deployments. Both are pure bookkeeping on a
clock: no I/O, so the choices, the cooldowns and their timing are unit-tested
on ``task.Clock``. The Exchange asks a plan for the next deployment, makes the
attempt, and tells the plan how it went.

The rules, in the order they apply to a choice:

1. at most ``model.attempts`` (``1 + retries``) attempts per model and request;
2. a deployment not yet tried in this request before one already tried;
3. among those, one not cooling down, of the lowest ``priority`` present, drawn
   by the strategy (``weighted``: in proportion to ``weight``; ``least_busy``:
   fewest in flight here, ties by weight);
4. when all of them are cooling down, the one whose cooldown ends first: a
   request is never refused without a try.

A deployment whose cooldown has ended is probed by one request: until that
attempt ends, others treat it as still cooling; success ends the cooldown, a
retryable failure starts a new one at once.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from email.utils import parsedate_to_datetime

from twisted.internet.interfaces import IReactorTime

from twisted_gw.config.entities import Cooldown, Model

#: the longest cooldown an upstream's Retry-After can ask for, in seconds
MAX_RETRY_AFTER = 600.0


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """An upstream's ``Retry-After`` (delay seconds or an HTTP date) as seconds
    from ``now``, at most :data:`MAX_RETRY_AFTER`; None if absent, unreadable
    or not in the future."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value) if value.isdigit() else None
    except ValueError:  # pragma: no cover - isdigit() admits only what float() reads
        seconds = None
    if seconds is None:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds <= 0:
        return None
    return min(seconds, MAX_RETRY_AFTER)


class DeploymentState:
    """What this node knows about one deployment."""

    __slots__ = ("deployment", "failures", "in_flight", "probing", "until", "upstream")

    def __init__(self, upstream: tuple) -> None:
        #: what the deployment points at: its state restarts when that changes
        self.upstream = upstream
        #: the entity last seen for it (a new snapshot brings a new one)
        self.deployment: Model | None = None
        self.in_flight = 0
        #: times of the retryable failures within the cooldown window
        self.failures: deque[float] = deque()
        #: the end of its cooldown (0: never cooled down; <= now: ended,
        #: waiting for its probe)
        self.until = 0.0
        #: a request is probing it after its cooldown
        self.probing = False

    def cooling(self, now: float) -> bool:
        """Not to be chosen while another deployment is free."""
        return self.until > now or self.probing

    def rests_until(self, now: float) -> float:
        """When it is free again, for ordering deployments that all cool down."""
        return now if self.probing else self.until


def _upstream(d: Model) -> tuple:
    """What a deployment points at (a provider entity's URLs and settings too)."""
    return (
        d.provider,
        d.upstream_model,
        d.api_base,
        d.api_key,
        tuple(d.endpoint_urls.items()),
        tuple(d.provider_config.items()),
    )


class Router:
    """This node's view of every deployment (cooldowns are per node)."""

    def __init__(self, clock: IReactorTime, rng: random.Random | None = None) -> None:
        self.clock = clock
        self.random = rng or random.Random()
        self._states: dict[tuple[str, int], DeploymentState] = {}

    def state(self, deployment: Model) -> DeploymentState:
        """The deployment's state (a new one when its upstream changed)."""
        key = (deployment.id, deployment.index)
        state = self._states.get(key)
        if state is not None and state.deployment is deployment:
            return state
        upstream = _upstream(deployment)
        if state is None or state.upstream != upstream:  # new, or now points elsewhere
            state = self._states[key] = DeploymentState(upstream)
        state.deployment = deployment  # entities are immutable: same object, same upstream
        return state

    def plan(self, model: Model, serves: Callable[[Model], bool] | None = None) -> Plan:
        """One request's walk over ``model``'s deployments (those that
        ``serves`` admits, e.g. that serve the request's endpoint)."""
        return Plan(self, model, serves)

    def cooling_down(self) -> list[tuple[str, int, float]]:
        """(model id, deployment index, seconds left) of every deployment cooling down now."""
        now = self.clock.seconds()
        return [
            (model_id, index, max(0.0, state.until - now))
            for (model_id, index), state in self._states.items()
            if state.cooling(now)
        ]

    # -- what an attempt tells the router ---------------------------------------------

    def began(self, deployment: Model) -> tuple[DeploymentState, bool]:
        """An attempt starts on ``deployment``: (its state, whether the attempt
        probes it). The first attempt on a deployment that cooled down probes
        it, whether its cooldown ended or every deployment was resting."""
        state = self.state(deployment)
        state.in_flight += 1
        probe = bool(state.until) and not state.probing
        if probe:
            state.probing = True
        return state, probe

    def succeeded(self, state: DeploymentState, probe: bool) -> None:
        """The deployment answered: whatever it suffered is over. The request
        stays in flight on it (a stream is relayed for a while) until
        :meth:`released`."""
        state.until = 0.0
        state.failures.clear()
        if probe:
            state.probing = False

    def released(self, state: DeploymentState) -> None:
        """The request a deployment answered is over."""
        state.in_flight -= 1

    def abandoned(self, state: DeploymentState, probe: bool) -> None:
        """The attempt ended without telling anything about the upstream (the
        client left, a failure not retried): a probe lets the next request probe."""
        state.in_flight -= 1
        if probe:
            state.probing = False

    def failed(
        self,
        state: DeploymentState,
        probe: bool,
        cooldown: Cooldown,
        retry_after: float | None = None,
    ) -> bool:
        """A retryable failure; True if it put the deployment in cooldown.

        The upstream's ``retry_after`` (seconds) wins; a failed probe rests
        again at once; otherwise ``cooldown.failures`` failures within its
        window start one."""
        state.in_flight -= 1
        now = self.clock.seconds()
        if retry_after is not None:
            return self._cool(state, now, retry_after)
        if probe:
            return self._cool(state, now, cooldown.duration_ms / 1000.0)
        times = state.failures
        times.append(now)
        horizon = now - cooldown.window_ms / 1000.0
        while times and times[0] <= horizon:
            times.popleft()
        if len(times) >= cooldown.failures:
            return self._cool(state, now, cooldown.duration_ms / 1000.0)
        return False

    @staticmethod
    def _cool(state: DeploymentState, now: float, seconds: float) -> bool:
        state.until = now + seconds
        state.probing = False
        state.failures.clear()
        return True


class Plan:
    """One request's attempts on one model: see the module docstring."""

    __slots__ = ("budget", "deployments", "made", "model", "router", "tried")

    def __init__(
        self, router: Router, model: Model, serves: Callable[[Model], bool] | None = None
    ) -> None:
        self.router = router
        self.model = model
        deployments = model.deployments
        if serves is not None and len(deployments) > 1:
            deployments = tuple(d for d in deployments if serves(d))
        elif serves is not None and not serves(deployments[0]):
            deployments = ()
        self.deployments = deployments
        retries = model.routing.retries
        self.budget = (
            0 if not deployments else 1 + (len(deployments) - 1 if retries is None else retries)
        )
        self.made = 0
        self.tried: set[int] = set()

    def next(self) -> Model | None:
        """The deployment of the next attempt, or None when the budget is spent."""
        if self.made >= self.budget:
            return None
        self.made += 1
        deployments = self.deployments
        if len(deployments) == 1:
            return deployments[0]
        chosen = self._choose(deployments)
        self.tried.add(chosen.index)
        return chosen

    def _choose(self, deployments: tuple[Model, ...]) -> Model:
        router = self.router
        untried = [d for d in deployments if d.index not in self.tried] or list(deployments)
        now = router.clock.seconds()
        states = [router.state(d) for d in untried]
        free = [d for d, s in zip(untried, states, strict=True) if not s.cooling(now)]
        if not free:  # all resting: the one that is free first (never refuse untried)
            return min(
                zip(untried, states, strict=True),
                key=lambda ds: (ds[1].rests_until(now), ds[0].index),
            )[0]
        top = min(d.priority for d in free)
        group = [d for d in free if d.priority == top]
        if len(group) > 1 and self.model.routing.strategy == "least_busy":
            least = min(router.state(d).in_flight for d in group)
            group = [d for d in group if router.state(d).in_flight == least]
        if len(group) == 1:
            return group[0]
        return self._weighted(group)

    def _weighted(self, group: list[Model]) -> Model:
        total = sum(d.weight for d in group)
        point = self.router.random.random() * total
        for d in group:
            point -= d.weight
            if point < 0:
                return d
        return group[-1]  # float rounding at the very top
