"""Load and check the gateway's config file (CONTRACT 1, 5.5).

Everything that can be known wrong before a socket is opened is checked here,
so a bad file fails in milliseconds with one readable line instead of a
traceback. :data:`SCHEMA` is the one table of every key the gateway knows: its
kind (what it accepts), its default and what it is for. The loader, the
unknown-key warnings and the error texts all read it, and :func:`reference`
turns it into the README's config reference.

A known key with a value of the wrong type or range is a :class:`ConfigError`
(``<path> must be <expected>, got <what>``); a key the table does not know is
a warning in :attr:`GatewayConfig.warnings` (AISIX files may carry keys we do
not use), naming the nearest known key of its level. ``null`` (or an absent
key) means the default everywhere; a blank string does too for text keys.
Values are never echoed in a message unless they are numbers or one of a
fixed set of words: a wrong admin key or password must not reach a log.

The result is a frozen :class:`GatewayConfig`; nothing downstream reads the
raw mapping.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from twisted_gw.observability.logsafe import escape

DEFAULT_PROXY_LISTEN = "0.0.0.0:3000"
DEFAULT_ADMIN_LISTEN = "127.0.0.1:3001"
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_UPSTREAM_TIMEOUT = 600.0
#: one upstream SSE event (a line, or the data lines of one event)
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
#: one whole non-stream upstream answer
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
#: output tokens a budget reserves for a request that caps none (issue 17)
DEFAULT_BUDGET_MAX_TOKENS = 4096
#: seconds a client has to send a request's headers, from its first byte
DEFAULT_HEADER_TIMEOUT = 30.0
#: ``server.workers``: processes serving the listeners (1: today's single process)
MAX_WORKERS = 256
#: seconds requests in flight may go on after SIGTERM/SIGINT (CONTRACT 5.2)
DEFAULT_SHUTDOWN_GRACE = 30.0
#: the request headers a CORS preflight allows unless told otherwise (CONTRACT 5.6)
DEFAULT_CORS_HEADERS = ("authorization", "content-type")
STORE_FILE_NAME = "twisted-gw-store.json"
LEDGER_FILE_NAME = "ledger.sqlite3"
#: spans a gateway holds for export before it drops (CONTRACT 5.3)
DEFAULT_TRACE_QUEUE = 2048
#: the OpenTelemetry variables that name a traces endpoint, in their order of precedence
TRACES_ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"


class ConfigError(Exception):
    """The config file cannot be used; the message is what the operator sees."""


# -- the checked config ----------------------------------------------------
# No defaults here: they are in SCHEMA, and load_config fills every field.


@dataclass(frozen=True)
class TLSConfig:
    enabled: bool = False
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class CorsConfig:
    """A listener's CORS policy (CONTRACT 5.6); absent means CORS is off.

    Origins are lowercased (browsers send them so); ``"*"`` among them allows
    every origin. Header names are lowercased; ``"*"`` among them allows what
    a preflight asks for."""

    allow_origins: tuple[str, ...]
    allow_headers: tuple[str, ...]
    max_age: int


@dataclass(frozen=True)
class ListenConfig:
    """One listener: a literal address, a port and optional TLS."""

    name: str  # "Proxy" or "Admin", as the error messages spell it
    host: str
    port: int
    tls: TLSConfig
    header_timeout: float
    max_connections: int
    cors: CorsConfig | None = None


@dataclass(frozen=True)
class EtcdConfig:
    hosts: tuple[str, ...]
    prefix: str
    timeout: float
    user: str | None
    password: str | None = field(repr=False)
    #: start-up: retries after the first failed load, and the pause between
    #: attempts (AISIX: 5 retries, 5 s apart, then exit 1)
    startup_retries: int
    startup_retry_interval: float
    #: seconds between liveness probes of a live watch (0: none)
    probe_interval: float
    #: https hosts: a PEM trust root instead of the system's, or no check at all
    ca_file: str | None
    verify: bool


@dataclass(frozen=True)
class RedisConfig:
    """Shared rate-limit counters (CONTRACT 4.5, several nodes)."""

    url: str = field(repr=False)  # may hold a password
    prefix: str
    timeout: float
    fail_open: bool


@dataclass(frozen=True)
class LedgerConfig:
    """The request ledger (issue 17): SQLite at ``path``, or PostgreSQL at ``url``."""

    #: the SQLite file (absolute); unused when ``url`` is set
    path: str
    #: a postgresql:// URL: the shared database of several gateways
    url: str | None = field(repr=False)  # may hold a password
    #: days a row is kept (0: forever)
    retention_days: int
    max_buffer: int
    batch_size: int
    flush_interval: float
    #: seconds a database call may take (PostgreSQL's connect and statement timeout)
    timeout: float


@dataclass(frozen=True)
class TracingConfig:
    """OpenTelemetry traces (CONTRACT 5.3); present only when an endpoint is known."""

    #: the OTLP/HTTP traces URL (config, else the OTEL_EXPORTER_OTLP_* variables)
    endpoint: str
    capture_content: bool
    #: None: OTEL_SERVICE_NAME if set, else twisted-gw
    service_name: str | None
    max_queue_size: int


@dataclass(frozen=True)
class GatewayConfig:
    """The whole config file, checked and with defaults filled in."""

    path: str | None
    proxy: ListenConfig
    admin: ListenConfig
    admin_keys: tuple[str, ...] = field(repr=False)
    etcd: EtcdConfig | None
    store_path: str
    seed_demo: bool
    max_body_bytes: int
    upstream_timeout: float
    max_event_bytes: int
    max_response_bytes: int
    #: dotted paths of extra IHook factories, run after the built-in hooks
    hooks: tuple[str, ...]
    redis: RedisConfig | None
    access_log_format: str
    #: run hooks installed as Twisted plugins (IPlugin + IHook)
    plugin_hooks: bool
    #: the Responses API's history bounds (CONTRACT-NEXT 3.4 **[ours]**)
    history_max_entries: int = 10_000
    history_max_age: float = 86_400.0
    #: processes serving the listeners (``server.workers``; 1: one process, as ever)
    workers: int = 1
    #: OpenTelemetry tracing (CONTRACT 5.3); None: off
    tracing: TracingConfig | None = None
    #: seconds requests in flight may finish in after SIGTERM/SIGINT (CONTRACT 5.2)
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    #: the request ledger (issue 17); None: off
    ledger: LedgerConfig | None = None
    #: one line per key the schema does not know (CONTRACT 5.5), for start-up to print
    warnings: tuple[str, ...] = ()
    #: output tokens a budget reserves for a request without its own cap (issue 17)
    budget_default_max_tokens: int = 4096


# -- what a key accepts ----------------------------------------------------


class _Refused(Exception):
    """A kind does not accept a value; ``got`` ends the message (``got <got>``)."""

    def __init__(self, got: str) -> None:
        super().__init__(got)
        self.got = got


def _a(value: Any) -> str:
    """What a value is, without showing it (it may be a secret)."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string" if value else "an empty string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"  # YAML dates and the like


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Kind(Protocol):
    """What one key accepts; ``expected`` completes ``<path> must be ...``."""

    @property
    def expected(self) -> str: ...

    def check(self, value: Any, path: str, warn: Callable[[str], None]) -> Any:
        """The value to use for a non-null ``value``; ``None`` means the default.

        Raises :class:`_Refused` (the loader words the message) or
        :class:`ConfigError` (for a message of its own).
        """
        ...


@dataclass(frozen=True)
class Text:
    """A string; blank means the default."""

    expected: ClassVar[str] = "a string"

    def check(self, value: Any, path: str, warn: Callable[[str], None]) -> str | None:
        if not isinstance(value, str):
            raise _Refused(_a(value))
        return value or None


@dataclass(frozen=True)
class URL:
    """A string starting with one of ``schemes``; never echoed (it may hold a password)."""

    schemes: tuple[str, ...]

    @property
    def expected(self) -> str:
        return f"a {' or '.join(self.schemes)} URL"

    def check(self, value: Any, path: str, warn: Callable[[str], None]) -> str | None:
        if not isinstance(value, str):
            raise _Refused(_a(value))
        if value and not value.startswith(self.schemes):
            raise ConfigError(f"{path} must start with {' or '.join(self.schemes)}")
        return value or None


@dataclass(frozen=True)
class Flag:
    expected: ClassVar[str] = "true or false"

    def check(self, value: Any, path: str, warn: Callable[[str], None]) -> bool:
        if not isinstance(value, bool):
            raise _Refused(_a(value))
        return value


@dataclass(frozen=True)
class Integer:
    minimum: int  # 0 or 1
    maximum: int | None = None

    @property
    def expected(self) -> str:
        if self.maximum is not None:
            return f"an integer from {self.minimum} to {self.maximum}"
        return "a positive integer" if self.minimum == 1 else "a non-negative integer"

    def check(self, value: Any, path: str, warn: Callable[[str], None]) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Refused(_a(value))
        if value < self.minimum or (self.maximum is not None and value > self.maximum):
            raise _Refused(str(value))
        return value


@dataclass(frozen=True)
class Seconds:
    """A duration in seconds; ``0`` means the default unless ``zero_is_off``.

    AISIX's own tooling writes ``deployment.etcd.timeout: 5000`` (milliseconds)
    where its docs say seconds; a value above ``ms_above`` (300 for the etcd
    call timeout) cannot sensibly be seconds there, so it is read as ms.
    """

    ms_above: float = 0
    zero_is_off: bool = False
    expected: ClassVar[str] = "a number of seconds >= 0"

    def check(self, value: Any, path: str, warn: Callable[[str], None]) -> float | None:
        if not _number(value):
            raise _Refused(_a(value))
        if value < 0 or not math.isfinite(value):
            raise _Refused(str(value))
        if value == 0:
            return 0.0 if self.zero_is_off else None
        return value / 1000.0 if self.ms_above and value > self.ms_above else float(value)


@dataclass(frozen=True)
class OneOf:
    choices: tuple[str, ...]

    @property
    def expected(self) -> str:
        quoted = [f"'{c}'" for c in self.choices]
        return " or ".join([", ".join(quoted[:-1]), quoted[-1]]) if len(quoted) > 1 else quoted[0]

    def check(self, value: Any, path: str, warn: Callable[[str], None]) -> str:
        if value not in self.choices:
            raise _Refused(repr(value) if isinstance(value, str) else _a(value))
        return value


@dataclass(frozen=True)
class Listen:
    """``IP:port`` or ``[v6]:port`` (see :func:`parse_listen`); checks to ``(host, port)``."""

    name: str  # "Proxy" or "Admin"
    expected: ClassVar[str] = "IP:port or [v6]:port"

    def check(self, value: Any, path: str, warn: Callable[[str], None]) -> tuple[str, int]:
        return parse_listen(self.name, value, "")


def _items(value: Any, item_ok: Callable[[Any], bool]) -> list[Any]:
    if not isinstance(value, list):
        raise _Refused(_a(value))
    for item in value:
        if not item_ok(item):
            raise _Refused(f"a list holding {_a(item)}")
    return value


def _nonblank(item: Any) -> bool:
    return isinstance(item, str) and bool(item)


@dataclass(frozen=True)
class Hosts:
    """One URL or a list of them; an empty list means the default."""

    expected: ClassVar[str] = "a URL or a list of URLs"

    def check(self, value: Any, path: str, warn: Callable[[str], None]) -> tuple[str, ...] | None:
        if isinstance(value, str):
            return (value,) if value else None
        return tuple(_items(value, _nonblank)) or None


@dataclass(frozen=True)
class DottedPaths:
    expected: ClassVar[str] = "a list of dotted paths (package.module.Name)"

    def check(self, value: Any, path: str, warn: Callable[[str], None]) -> tuple[str, ...]:
        return tuple(_items(value, _nonblank))


def _origin(item: str) -> bool:
    """``"*"`` or ``scheme://host[:port]`` exactly as a browser's Origin header has it:
    a trailing ``/`` or a path would never match one."""
    scheme, sep, rest = item.partition("://")
    return item == "*" or (
        bool(sep and scheme.isalpha() and rest) and not any(c in rest for c in "/?# ")
    )


def _header_name(item: str) -> bool:
    return item == "*" or (bool(item) and all(c.isalnum() or c in "-_" for c in item))


@dataclass(frozen=True)
class Words:
    """A list of strings each of which ``fits`` (lowercased, as HTTP compares them)."""

    fits: Callable[[str], bool]
    expected: str
    #: what an entry that does not fit is, for the message (never the entry itself)
    misfit: str

    def check(self, value: Any, path: str, warn: Callable[[str], None]) -> tuple[str, ...]:
        for item in _items(value, lambda item: isinstance(item, str)):
            if not self.fits(item):
                raise _Refused(f"a list holding {self.misfit}")
        return tuple(item.lower() for item in value)


#: CORS origins: ``https://app.example``, ``http://localhost:5173`` or ``"*"``
ORIGINS = Words(
    _origin,
    'a list of origins (scheme://host[:port]) or "*"',
    "an entry that is not an origin (a path, a trailing '/' or no scheme)",
)
HEADER_NAMES = Words(
    _header_name, 'a list of header names or "*"', "an entry that is not a header name"
)


@dataclass(frozen=True)
class AdminKeys:
    """``[{key: ...}, ...]``; a bare string entry is taken as the key (as it always was)."""

    expected: ClassVar[str] = "a list of {key: ...}"

    def check(self, value: Any, path: str, warn: Callable[[str], None]) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise _Refused(_a(value))
        keys = []
        for i, entry in enumerate(value):
            where = f"{path}[{i}]"
            if isinstance(entry, dict):
                for name in entry:
                    if name != "key":
                        warn(_unknown(f"{where}.{name}", name, ("key",)))
                entry = entry.get("key")
                where += ".key"
            elif not isinstance(entry, str):
                raise ConfigError(f"{where} must be {{key: ...}}, got {_a(entry)}")
            if not isinstance(entry, str) or not entry:
                # an empty key would match an empty Authorization value
                raise ConfigError(f"{where} must be a non-empty string, got {_a(entry)}")
            keys.append(entry)
        return tuple(keys)


#: what ``server.workers`` and ``--workers`` accept (one check for both)
WORKERS = Integer(1, MAX_WORKERS)


def check_workers(value: Any, path: str) -> int:
    """``value`` as a worker count, or the ConfigError of any other key
    (``<path> must be an integer from 1 to 256, got 0``); for ``--workers``,
    whose digits arrive as text."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return Key(WORKERS, 1, "").read(value, path, lambda _: None)


# -- the table -------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One config key: what it accepts, its default and what it is for."""

    kind: Kind
    default: Any
    doc: str
    #: the default as the reference shows it, when the value itself reads badly
    shown: str | None = None

    def read(self, value: Any, path: str, warn: Callable[[str], None]) -> Any:
        if value is None:
            return self.default
        try:
            checked = self.kind.check(value, path, warn)
        except _Refused as refused:
            raise ConfigError(f"{path} must be {self.kind.expected}, got {refused.got}") from None
        return self.default if checked is None else checked


@dataclass(frozen=True)
class Section:
    """A mapping of keys; ``null`` or absent means all its defaults."""

    keys: Mapping[str, Key | Section]
    #: absent or null means the feature is off (None), not its defaults
    optional: bool = False
    doc: str = ""

    def read(self, raw: Any, path: str, warn: Callable[[str], None]) -> dict[str, Any] | None:
        if raw is None:
            if self.optional:
                return None
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must be a mapping, got {_a(raw)}")
        values: dict[str, Any] = {}
        for name, value in raw.items():  # in file order, so messages come in reading order
            where = f"{path}.{name}" if path else str(name)
            spec = self.keys.get(name) if isinstance(name, str) else None
            if spec is None:
                warn(_unknown(where, name, self.keys))
            else:
                values[name] = spec.read(value, where, warn)
        for name, spec in self.keys.items():
            if name not in values:
                values[name] = spec.read(None, f"{path}.{name}" if path else name, warn)
        return values


def _unknown(path: str, name: Any, known: Iterable[str]) -> str:
    """The warning for a key the table does not know, with the nearest known one."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return escape(f"unknown config key '{path}'{hint}")  # a file's key: one line, uncoloured


def _tls_section(name: str) -> Section:
    return Section(
        {
            "enabled": Key(Flag(), False, f"serve HTTPS on the {name.lower()} listener"),
            "cert_file": Key(
                Text(),
                None,
                "PEM certificate, may hold a chain (leaf first); required if enabled;"
                " relative to the working directory",
            ),
            "key_file": Key(Text(), None, "PEM private key; required if enabled; likewise"),
        }
    )


def _listener_section(
    name: str, listen: str, max_connections: int, **more: Key | Section
) -> Section:
    return Section(
        {
            "listen": Key(
                Listen(name),
                parse_listen(name, listen, listen),
                "literal IP:port or [v6]:port (hostnames are refused, as AISIX does)",
                shown=listen,
            ),
            "tls": _tls_section(name),
            "header_timeout": Key(
                Seconds(),
                DEFAULT_HEADER_TIMEOUT,
                "seconds a client has to send a request's headers",
            ),
            "max_connections": Key(
                Integer(1), max_connections, "connections open at once on this listener"
            ),
            "cors": Section(
                {
                    "allow_origins": Key(
                        ORIGINS,
                        (),
                        "origins whose browser pages may call this listener",
                        shown="[]",
                    ),
                    "allow_headers": Key(
                        HEADER_NAMES,
                        DEFAULT_CORS_HEADERS,
                        'request headers a preflight allows; "*": those it asks for',
                    ),
                    "max_age": Key(
                        Integer(0), 600, "seconds a browser may cache a preflight's answer"
                    ),
                },
                optional=True,
                doc="answer CORS preflights and mark responses for the allowed origins",
            ),
            **more,
        }
    )


def parse_listen(name: str, value: Any, default: str) -> tuple[str, int]:
    """Parse ``IP:port`` or ``[v6]:port``; hostnames are refused like AISIX does."""
    if value is None:
        value = default
    text = str(value).strip()
    problem = f"{name} listen address '{text}' is invalid: invalid socket address syntax"
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ConfigError(problem)
        version = 6
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ConfigError(problem)
        version = 4
    try:
        addr = ipaddress.ip_address(host)
        port_number = int(port)
    except ValueError:
        raise ConfigError(problem) from None
    if addr.version != version or not (0 <= port_number <= 65535) or not port.isdigit():
        raise ConfigError(problem)
    return str(addr), port_number


#: Every key the gateway reads, with its kind, default and meaning.
SCHEMA = Section(
    {
        "deployment": Section(
            {
                "etcd": Section(
                    {
                        "host": Key(
                            Hosts(),
                            ("http://127.0.0.1:2379",),
                            "http:// or https:// URLs (a bare host:port is http), tried in order",
                            shown='["http://127.0.0.1:2379"]',
                        ),
                        "prefix": Key(Text(), "/aisix", "every key lives under it"),
                        "timeout": Key(
                            Seconds(ms_above=300),
                            5.0,
                            "seconds for each etcd call, connect included"
                            " (above 300 it is read as milliseconds: AISIX's tooling writes 5000)",
                        ),
                        "user": Key(Text(), None, "etcd authentication"),
                        "password": Key(Text(), None, "etcd authentication"),
                        "startup_retries": Key(
                            Integer(0), 5, "retries of the first load after it fails; then exit 1"
                        ),
                        "startup_retry_interval": Key(
                            Seconds(), 5.0, "seconds between those attempts"
                        ),
                        "probe_interval": Key(
                            Seconds(zero_is_off=True),
                            10.0,
                            "seconds between liveness probes of a live watch; 0 turns them off",
                        ),
                        "tls": Section(
                            {
                                "ca_file": Key(
                                    Text(),
                                    None,
                                    "PEM trust root for https:// hosts",
                                    shown="system CAs",
                                ),
                                "verify": Key(
                                    Flag(), True, "false skips the certificate check of https://"
                                ),
                            }
                        ),
                    },
                    optional=True,
                    doc="keep models and keys in etcd instead of the embedded store",
                ),
                "admin": Section(
                    {
                        "admin_key": Key(
                            AdminKeys(),
                            (),
                            "Admin API keys; with none, every admin call is 401",
                            shown="[]",
                        ),
                    }
                ),
                "store": Section(
                    {
                        "path": Key(
                            Text(),
                            STORE_FILE_NAME,
                            "the embedded store file, used when deployment.etcd is absent",
                            shown=f"{STORE_FILE_NAME} next to the config file",
                        ),
                        "seed_demo": Key(
                            Flag(),
                            False,
                            "first start of an empty store: add model demo and key sk-demo-key",
                        ),
                    }
                ),
                "redis": Section(
                    {
                        "url": Key(
                            URL(("redis://", "rediss://")),
                            "redis://127.0.0.1:6379",
                            "user:password@ allowed; rediss:// for TLS",
                        ),
                        "prefix": Key(Text(), "twisted-gw", "every counter key starts with it"),
                        "timeout": Key(
                            Seconds(ms_above=60),
                            1.0,
                            "seconds a check may wait (above 60 it is read as milliseconds)",
                        ),
                        "on_error": Key(
                            OneOf(("allow", "reject")),
                            "allow",
                            "Redis down: allow, or reject (503)",
                        ),
                    },
                    optional=True,
                    doc="shared rate-limit counters",
                ),
                "ledger": Section(
                    {
                        "enabled": Key(
                            Flag(), True, "write one row per authenticated request to the ledger"
                        ),
                        "path": Key(
                            Text(),
                            None,
                            "the SQLite file, relative to the config file's directory",
                            shown=f"{LEDGER_FILE_NAME} next to the store file"
                            " (with etcd: next to the config file)",
                        ),
                        "url": Key(
                            URL(("postgresql://", "postgres://")),
                            None,
                            "PostgreSQL instead of SQLite (user:password@host:port/db),"
                            " shared by several gateways",
                        ),
                        "retention_days": Key(
                            Integer(0), 90, "days a row is kept; 0 keeps rows forever"
                        ),
                        "max_buffer": Key(
                            Integer(1),
                            10_000,
                            "rows held while the database is slow or down; more are dropped and"
                            " counted in twisted_gw_ledger_rows_dropped_total",
                        ),
                        "batch_size": Key(Integer(1), 500, "rows written in one transaction"),
                        "flush_interval": Key(
                            Seconds(),
                            1.0,
                            "seconds a row may wait in memory before its batch is written",
                        ),
                        "timeout": Key(
                            Seconds(),
                            5.0,
                            "seconds a database call may take (PostgreSQL connect and statement"
                            " timeout)",
                        ),
                    }
                ),
            }
        ),
        "server": Section(
            {
                "proxy": _listener_section(
                    "Proxy",
                    DEFAULT_PROXY_LISTEN,
                    4096,
                    max_body_bytes=Key(
                        Integer(1),
                        DEFAULT_MAX_BODY_BYTES,
                        "larger request bodies get 413 request_too_large",
                    ),
                    upstream_timeout=Key(
                        Seconds(),
                        DEFAULT_UPSTREAM_TIMEOUT,
                        "seconds; bounds upstream calls of models without their own timeout",
                    ),
                    max_event_bytes=Key(
                        Integer(1), DEFAULT_MAX_EVENT_BYTES, "largest upstream SSE event"
                    ),
                    max_response_bytes=Key(
                        Integer(1),
                        DEFAULT_MAX_RESPONSE_BYTES,
                        "largest non-stream upstream answer",
                    ),
                    budget_default_max_tokens=Key(
                        Integer(1),
                        DEFAULT_BUDGET_MAX_TOKENS,
                        "output tokens a budgeted key's request is reserved for when it sets"
                        " no max_tokens / max_completion_tokens / max_output_tokens",
                    ),
                    access_log=Section(
                        {
                            "format": Key(
                                OneOf(("logfmt", "json")),
                                "logfmt",
                                "json: one JSON object per access-log line",
                            )
                        }
                    ),
                    responses_history=Section(
                        {
                            "max_entries": Key(
                                Integer(1),
                                10_000,
                                "Responses API turns kept for previous_response_id; oldest out",
                            ),
                            "max_age": Key(
                                Seconds(),
                                86_400.0,
                                "seconds a stored response can be continued",
                            ),
                        }
                    ),
                ),
                "admin": _listener_section("Admin", DEFAULT_ADMIN_LISTEN, 256),
                "workers": Key(
                    WORKERS,
                    1,
                    "processes serving both listeners (see Workers); --workers N overrides it",
                ),
                "shutdown_grace": Key(
                    Seconds(zero_is_off=True),
                    DEFAULT_SHUTDOWN_GRACE,
                    "seconds requests in flight may finish in after SIGTERM/SIGINT;"
                    " then they are cut (0: at once)",
                ),
            }
        ),
        "observability": Section(
            {
                "tracing": Section(
                    {
                        "endpoint": Key(
                            URL(("http://", "https://")),
                            None,
                            "OTLP/HTTP traces URL (e.g. http://127.0.0.1:4318/v1/traces); absent:"
                            " OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT"
                            " + /v1/traces, else tracing is off",
                        ),
                        "capture_content": Key(
                            Flag(),
                            False,
                            "record prompts and completions on the spans (bounded in size)",
                        ),
                        "service_name": Key(
                            Text(),
                            None,
                            "the traces' service.name",
                            shown="OTEL_SERVICE_NAME, else twisted-gw",
                        ),
                        "max_queue_size": Key(
                            Integer(1),
                            DEFAULT_TRACE_QUEUE,
                            "spans waiting for export; more are dropped and counted"
                            " in twisted_gw_trace_spans_dropped_total",
                        ),
                    }
                ),
            }
        ),
        "hooks": Key(
            DottedPaths(),
            (),
            "IHook factories called with no arguments, run after the built-in hooks, in order",
            shown="[]",
        ),
        "plugin_hooks": Key(Flag(), True, "run hooks installed as Twisted plugins"),
    }
)


def reference(section: Section = SCHEMA, path: str = "") -> Iterator[tuple[str, str, str, str]]:
    """``(key, accepts, default, meaning)`` for every key of the table, for the README."""
    for name, spec in section.keys.items():
        where = f"{path}.{name}" if path else name
        if isinstance(spec, Section):
            if spec.optional:  # its presence switches a feature on
                yield where, "a mapping", "absent", spec.doc
            yield from reference(spec, where)
        else:
            shown = spec.shown if spec.shown is not None else _show(spec.default)
            yield where, spec.kind.expected, shown, spec.doc


def _show(default: Any) -> str:
    if default is None:
        return "absent"
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    if isinstance(default, str):
        return default
    return json.dumps(list(default) if isinstance(default, tuple) else default)


# -- from the table to the config ------------------------------------------


def _tls(name: str, values: dict[str, Any]) -> TLSConfig:
    if not values["enabled"]:
        return TLSConfig()
    paths = {}
    for which in ("cert_file", "key_file"):  # the cert is checked before the key
        path = values[which]  # relative to the working directory, as AISIX reads it
        if path is None:
            raise ConfigError(f"{name} TLS {which} is required when TLS is enabled")
        if not os.path.isfile(path):
            raise ConfigError(f"{name} TLS {which} '{path}' does not exist")
        paths[which] = path
    return TLSConfig(True, paths["cert_file"], paths["key_file"])


def _listener(name: str, values: dict[str, Any]) -> ListenConfig:
    host, port = values["listen"]
    cors = values["cors"]
    return ListenConfig(
        name,
        host,
        port,
        _tls(name, values["tls"]),
        header_timeout=values["header_timeout"],
        max_connections=values["max_connections"],
        cors=None if cors is None else CorsConfig(**cors),
    )


def _etcd(values: dict[str, Any] | None) -> EtcdConfig | None:
    if values is None:
        return None
    ca_file = values["tls"]["ca_file"]
    if ca_file is not None and not os.path.isfile(ca_file):
        raise ConfigError(f"etcd TLS ca_file '{ca_file}' does not exist")
    return EtcdConfig(
        # a bare host:port means http, as etcd's own clients read it
        hosts=tuple((h if "://" in h else f"http://{h}").rstrip("/") for h in values["host"]),
        prefix=values["prefix"].rstrip("/"),
        timeout=values["timeout"],
        user=values["user"],
        password=values["password"],
        startup_retries=values["startup_retries"],
        startup_retry_interval=values["startup_retry_interval"],
        probe_interval=values["probe_interval"],
        ca_file=ca_file,
        verify=values["tls"]["verify"],
    )


def _redis(values: dict[str, Any] | None) -> RedisConfig | None:
    if values is None:
        return None
    return RedisConfig(
        url=values["url"],
        prefix=values["prefix"],
        timeout=values["timeout"],
        fail_open=values["on_error"] == "allow",
    )


def _tracing(values: dict[str, Any], environ: Mapping[str, str]) -> TracingConfig | None:
    """Tracing is on when an endpoint is known: the config's, else the
    standard OpenTelemetry variables (OTEL_EXPORTER_OTLP_ENDPOINT is a base
    URL, ``/v1/traces`` appended as the OTLP spec says); OTEL_SDK_DISABLED
    turns it off, as it does every OpenTelemetry SDK."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    endpoint = values["endpoint"]
    if endpoint is None:
        for variable in (TRACES_ENDPOINT_VARIABLE, ENDPOINT_VARIABLE):
            endpoint = environ.get(variable, "").strip() or None
            if endpoint is None:
                continue
            if not endpoint.startswith(("http://", "https://")):
                raise ConfigError(f"{variable} must start with http:// or https://")
            if variable == ENDPOINT_VARIABLE:
                endpoint = endpoint.rstrip("/") + "/v1/traces"
            break
    if endpoint is None:
        return None
    return TracingConfig(
        endpoint=endpoint,
        capture_content=values["capture_content"],
        service_name=values["service_name"],
        max_queue_size=values["max_queue_size"],
    )


def _ledger(
    values: dict[str, Any], base_dir: str, store_path: str, etcd: bool
) -> LedgerConfig | None:
    """The ledger's database: PostgreSQL when a URL is given, else a SQLite
    file (``path`` relative to the config file's directory; by default next
    to the embedded store file, or next to the config file with etcd)."""
    if not values["enabled"]:
        return None
    path = values["path"]
    if path is None:
        directory = base_dir if etcd else os.path.dirname(store_path)
        path = os.path.join(directory, LEDGER_FILE_NAME)
    else:
        path = os.path.join(base_dir, path)
    return LedgerConfig(
        path=path,
        url=values["url"],
        retention_days=values["retention_days"],
        max_buffer=values["max_buffer"],
        batch_size=values["batch_size"],
        flush_interval=values["flush_interval"],
        timeout=values["timeout"],
    )


def read_file(path: str) -> Any:
    """Parse ``path`` as JSON (``.json``) or YAML (anything else)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file '{path}': {e.strerror}") from None
    if path.endswith(".json"):
        try:
            return json.loads(data)
        except ValueError as e:  # json.JSONDecodeError, UnicodeDecodeError
            raise ConfigError(f"config file '{path}' is not valid JSON: {e}") from None
    import yaml  # lazily: start-up time counts, and JSON configs never need it

    try:
        return yaml.safe_load(data)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file '{path}' is not valid YAML: {e}") from None


def load_config(path: str | None, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and check the config file; ``None`` means ``./config.yaml`` or defaults.

    Pure apart from reading the file, checking that referenced files exist and
    reading the OpenTelemetry variables of ``environ`` (default: the
    process's): unknown keys are returned in ``warnings``, not printed.
    """
    if path is None and os.path.isfile("config.yaml"):
        path = "config.yaml"
    raw: Any = read_file(path) if path is not None else {}
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping at the top level")
    warnings: list[str] = []
    values = SCHEMA.read(raw, "", warnings.append)
    assert values is not None
    deployment, server = values["deployment"], values["server"]
    proxy_values = server["proxy"]
    base_dir = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    store_path = os.path.join(base_dir, deployment["store"]["path"])
    return GatewayConfig(
        path=path,
        proxy=_listener("Proxy", proxy_values),
        admin=_listener("Admin", server["admin"]),
        admin_keys=deployment["admin"]["admin_key"],
        etcd=_etcd(deployment["etcd"]),
        store_path=store_path,
        seed_demo=deployment["store"]["seed_demo"],
        max_body_bytes=proxy_values["max_body_bytes"],
        upstream_timeout=proxy_values["upstream_timeout"],
        max_event_bytes=proxy_values["max_event_bytes"],
        max_response_bytes=proxy_values["max_response_bytes"],
        hooks=values["hooks"],
        redis=_redis(deployment["redis"]),
        access_log_format=proxy_values["access_log"]["format"],
        plugin_hooks=values["plugin_hooks"],
        history_max_entries=proxy_values["responses_history"]["max_entries"],
        history_max_age=proxy_values["responses_history"]["max_age"],
        workers=server["workers"],
        tracing=_tracing(
            values["observability"]["tracing"], os.environ if environ is None else environ
        ),
        shutdown_grace=server["shutdown_grace"],
        ledger=_ledger(deployment["ledger"], base_dir, store_path, deployment["etcd"] is not None),
        warnings=tuple(warnings),
        budget_default_max_tokens=proxy_values["budget_default_max_tokens"],
    )
