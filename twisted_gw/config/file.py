"""Load and check the gateway's config file (CONTRACT 1).

Everything that can be known wrong before a socket is opened is checked here,
so a bad file fails in milliseconds with one readable line instead of a
traceback. The result is a frozen :class:`GatewayConfig`; nothing downstream
reads the raw mapping.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PROXY_LISTEN = "0.0.0.0:3000"
DEFAULT_ADMIN_LISTEN = "127.0.0.1:3001"
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_UPSTREAM_TIMEOUT = 600.0
#: one upstream SSE event (a line, or the data lines of one event)
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
#: one whole non-stream upstream answer
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
#: seconds a client has to send a request's headers, from its first byte
DEFAULT_HEADER_TIMEOUT = 30.0
#: open connections per listener
DEFAULT_MAX_CONNECTIONS = {"Proxy": 4096, "Admin": 256}
STORE_FILE_NAME = "twisted-gw-store.json"


class ConfigError(Exception):
    """The config file cannot be used; the message is what the operator sees."""


@dataclass(frozen=True)
class TLSConfig:
    enabled: bool = False
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class ListenConfig:
    """One listener: a literal address, a port and optional TLS."""

    name: str  # "Proxy" or "Admin", as the error messages spell it
    host: str
    port: int
    tls: TLSConfig = field(default_factory=TLSConfig)
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_connections: int = 4096


@dataclass(frozen=True)
class EtcdConfig:
    hosts: tuple[str, ...]
    prefix: str = "/aisix"
    timeout: float = 5.0
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    #: start-up: retries after the first failed load, and the pause between
    #: attempts (AISIX: 5 retries, 5 s apart, then exit 1)
    startup_retries: int = 5
    startup_retry_interval: float = 5.0
    #: seconds between liveness probes of a live watch (0: none)
    probe_interval: float = 10.0
    #: https hosts: a PEM trust root instead of the system's, or no check at all
    ca_file: str | None = None
    verify: bool = True


@dataclass(frozen=True)
class RedisConfig:
    """Shared rate-limit counters (CONTRACT 4.5, several nodes)."""

    url: str = field(default="redis://127.0.0.1:6379", repr=False)  # may hold a password
    prefix: str = "twisted-gw"
    timeout: float = 1.0
    fail_open: bool = True


@dataclass(frozen=True)
class GatewayConfig:
    """The whole config file, checked and with defaults filled in."""

    path: str | None
    proxy: ListenConfig
    admin: ListenConfig
    admin_keys: tuple[str, ...] = field(default=(), repr=False)
    etcd: EtcdConfig | None = None
    store_path: str = STORE_FILE_NAME
    seed_demo: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    #: dotted paths of extra IHook factories, run after the built-in hooks
    hooks: tuple[str, ...] = ()
    redis: RedisConfig | None = None
    access_log_format: str = "logfmt"
    #: run hooks installed as Twisted plugins (IPlugin + IHook)
    plugin_hooks: bool = True


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


def _tls(name: str, raw: Any) -> TLSConfig:
    if not isinstance(raw, dict) or not raw.get("enabled"):
        return TLSConfig()
    paths = {}
    for which in ("cert_file", "key_file"):  # the cert is checked before the key
        value = raw.get(which)
        if not value:
            raise ConfigError(f"{name} TLS {which} is required when TLS is enabled")
        path = str(value)  # relative to the working directory, as AISIX reads it
        if not os.path.isfile(path):
            raise ConfigError(f"{name} TLS {which} '{value}' does not exist")
        paths[which] = path
    return TLSConfig(True, paths["cert_file"], paths["key_file"])


def _positive_int(value: Any, what: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def _listener(name: str, raw: Any, default: str) -> ListenConfig:
    raw = raw if isinstance(raw, dict) else {}
    host, port = parse_listen(name, raw.get("listen"), default)
    section = f"server.{name.lower()}"
    return ListenConfig(
        name,
        host,
        port,
        _tls(name, raw.get("tls")),
        header_timeout=_seconds(
            raw.get("header_timeout"), f"{section}.header_timeout", DEFAULT_HEADER_TIMEOUT
        ),
        max_connections=_positive_int(
            raw.get("max_connections"),
            f"{section}.max_connections",
            DEFAULT_MAX_CONNECTIONS[name],
        ),
    )


def _seconds(value: Any, what: str, default: float, ms_above: float = 0) -> float:
    """A duration in seconds; 0 or absent means ``default``.

    AISIX's own tooling writes ``deployment.etcd.timeout: 5000`` (milliseconds)
    where its docs say seconds; a value above ``ms_above`` (300 for the etcd
    call timeout) cannot sensibly be seconds there, so it is read as ms.
    """
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} must be a number of seconds, got {value!r}")
    if value <= 0:
        return default
    return value / 1000.0 if ms_above and value > ms_above else float(value)


def _etcd(raw: Any) -> EtcdConfig | None:
    if not isinstance(raw, dict):
        return None
    hosts = raw.get("host") or ["http://127.0.0.1:2379"]
    if isinstance(hosts, str):
        hosts = [hosts]
    prefix = str(raw.get("prefix") or "/aisix").rstrip("/") or ""
    retries = raw.get("startup_retries", 5)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError("deployment.etcd.startup_retries must be a non-negative integer")
    tls = raw.get("tls") if isinstance(raw.get("tls"), dict) else {}
    ca_file = tls.get("ca_file")
    if ca_file is not None and not os.path.isfile(str(ca_file)):
        raise ConfigError(f"etcd TLS ca_file '{ca_file}' does not exist")
    return EtcdConfig(
        # a bare host:port means http, as etcd's own clients read it
        hosts=tuple(
            (h if "://" in h else f"http://{h}").rstrip("/") for h in (str(h) for h in hosts)
        ),
        prefix=prefix,
        timeout=_seconds(raw.get("timeout"), "deployment.etcd.timeout", 5.0, ms_above=300),
        user=raw.get("user"),
        password=raw.get("password"),
        startup_retries=retries,
        startup_retry_interval=_seconds(
            raw.get("startup_retry_interval"), "deployment.etcd.startup_retry_interval", 5.0
        ),
        probe_interval=0.0
        if raw.get("probe_interval") == 0
        else _seconds(raw.get("probe_interval"), "deployment.etcd.probe_interval", 10.0),
        ca_file=str(ca_file) if ca_file is not None else None,
        verify=tls.get("verify", True) is not False,
    )


def _redis(raw: Any) -> RedisConfig | None:
    if not isinstance(raw, dict):
        return None
    on_error = raw.get("on_error", "allow")
    if on_error not in ("allow", "reject"):
        raise ConfigError("deployment.redis.on_error must be 'allow' or 'reject'")
    url = str(raw.get("url") or "redis://127.0.0.1:6379")
    if not url.startswith(("redis://", "rediss://")):
        raise ConfigError("deployment.redis.url must start with redis:// or rediss://")
    return RedisConfig(
        url=url,
        prefix=str(raw.get("prefix") or "twisted-gw"),
        timeout=_seconds(raw.get("timeout"), "deployment.redis.timeout", 1.0, ms_above=60),
        fail_open=on_error == "allow",
    )


def _admin_keys(raw: Any) -> tuple[str, ...]:
    keys = []
    for entry in raw or ():
        if isinstance(entry, dict) and entry.get("key"):
            keys.append(str(entry["key"]))
        elif isinstance(entry, str) and entry:
            keys.append(entry)
    return tuple(keys)


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


def load_config(path: str | None) -> GatewayConfig:
    """Read and check the config file; ``None`` means ``./config.yaml`` or defaults."""
    if path is None and os.path.isfile("config.yaml"):
        path = "config.yaml"
    raw: Any = read_file(path) if path is not None else {}
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping at the top level")
    base_dir = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    deployment = raw.get("deployment") or {}
    server = raw.get("server") or {}
    if not isinstance(deployment, dict) or not isinstance(server, dict):
        raise ConfigError("config: 'deployment' and 'server' must be mappings")
    proxy_raw = server.get("proxy") if isinstance(server.get("proxy"), dict) else {}
    proxy = _listener("Proxy", proxy_raw, DEFAULT_PROXY_LISTEN)
    admin = _listener("Admin", server.get("admin"), DEFAULT_ADMIN_LISTEN)
    admin_raw = deployment.get("admin") if isinstance(deployment.get("admin"), dict) else {}
    store_raw = deployment.get("store") if isinstance(deployment.get("store"), dict) else {}
    store_path = store_raw.get("path") or STORE_FILE_NAME
    max_body = proxy_raw.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body <= 0:
        raise ConfigError("server.proxy.max_body_bytes must be a positive integer")
    access_raw = (
        proxy_raw.get("access_log") if isinstance(proxy_raw.get("access_log"), dict) else {}
    )
    access_format = access_raw.get("format", "logfmt")
    if access_format not in ("logfmt", "json"):
        raise ConfigError("server.proxy.access_log.format must be 'logfmt' or 'json'")
    hooks = raw.get("hooks") or []
    if not isinstance(hooks, list) or not all(isinstance(h, str) and h for h in hooks):
        raise ConfigError("hooks must be a list of dotted paths (package.module.Name)")
    return GatewayConfig(
        path=path,
        hooks=tuple(hooks),
        redis=_redis(deployment.get("redis")),
        plugin_hooks=raw.get("plugin_hooks", True) is not False,
        access_log_format=access_format,
        proxy=proxy,
        admin=admin,
        admin_keys=_admin_keys(admin_raw.get("admin_key")),
        etcd=_etcd(deployment.get("etcd")),
        store_path=os.path.join(base_dir, str(store_path)),
        seed_demo=bool(store_raw.get("seed_demo", False)),
        max_body_bytes=max_body,
        max_event_bytes=_positive_int(
            proxy_raw.get("max_event_bytes"),
            "server.proxy.max_event_bytes",
            DEFAULT_MAX_EVENT_BYTES,
        ),
        max_response_bytes=_positive_int(
            proxy_raw.get("max_response_bytes"),
            "server.proxy.max_response_bytes",
            DEFAULT_MAX_RESPONSE_BYTES,
        ),
        upstream_timeout=_seconds(
            proxy_raw.get("upstream_timeout"),
            "server.proxy.upstream_timeout",
            DEFAULT_UPSTREAM_TIMEOUT,
        ),
    )
