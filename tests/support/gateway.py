"""Run the real gateway as a subprocess and talk HTTP to it, for black-box tests.

Black-box tests check the contract from the outside: the config file a user
writes, the process they launch (``twistd -n twisted-gw`` or the console
script), its exit code and output, and the HTTP it serves.  This module holds
the plumbing for that and nothing about the gateway's internals.

Two kinds of tests use it:

* plain pytest tests (no reactor): use the blocking helpers,
  :meth:`GatewayProcess.wait_ready` and :func:`http`;
* pytest-twisted tests, where the reactor also hosts a
  :class:`~tests.support.mock_upstream.MockUpstream` that the gateway calls:
  never block there (the gateway's upstream call would wait on a reactor that
  is stuck in our blocking call), use :meth:`GatewayProcess.async_wait_ready`,
  :func:`treq_json` and :func:`treq_stream` instead.
"""

from __future__ import annotations

import copy
import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPSConnection
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

import yaml
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

__all__ = [
    "DEFAULT_ADMIN_KEY",
    "REMOVE",
    "REPO_ROOT",
    "GatewayExited",
    "GatewayProcess",
    "GatewayTimeout",
    "StreamResult",
    "free_port",
    "http",
    "is_listening",
    "make_self_signed_cert",
    "treq_json",
    "treq_stream",
    "write_config",
]

#: The repository root; put on the subprocess's PYTHONPATH so the gateway under
#: test is this checkout's, whatever the working directory.
REPO_ROOT = Path(__file__).resolve().parents[2]

#: The admin key :func:`write_config` configures unless told otherwise.
DEFAULT_ADMIN_KEY = "admin-secret"

GatewayMode = Literal["twistd", "console"]

_T = TypeVar("_T")


class _Remove:
    def __repr__(self) -> str:
        return "REMOVE"


#: A value for :func:`write_config`'s ``extra`` that deletes the key, to test
#: what the gateway does when a section is absent rather than set.
REMOVE: Any = _Remove()


# -- ports -----------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port of 127.0.0.1 that was free a moment ago.

    The port is released before returning, so another process could take it;
    good enough for tests, which start the gateway right away.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_listening(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port`` right now.

    For "nothing is left listening" assertions after a failed start-up.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# -- config ----------------------------------------------------------------


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if value is REMOVE:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        elif isinstance(value, Mapping):
            merged[key] = _deep_merge({}, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def write_config(
    tmpdir: str | os.PathLike[str],
    proxy_port: int,
    admin_port: int,
    admin_keys: Sequence[str] = (DEFAULT_ADMIN_KEY,),
    extra: Mapping[str, Any] | None = None,
    fmt: Literal["yaml", "json"] = "yaml",
    filename: str | None = None,
) -> Path:
    """Write a config file (CONTRACT section 1) and return its path.

    Both listeners are on 127.0.0.1 and no etcd is configured, so the gateway
    uses its embedded store next to the config file, inside ``tmpdir``.
    ``extra`` is deep-merged on top (mappings merge, anything else replaces,
    :data:`REMOVE` deletes), e.g.
    ``{"server": {"proxy": {"tls": {...}}}}`` or
    ``{"deployment": {"store": {"path": ...}}}``.
    The file is ``config.yaml``/``config.json`` unless ``filename`` is given.
    """
    config: dict[str, Any] = {
        "deployment": {"admin": {"admin_key": [{"key": key} for key in admin_keys]}},
        "server": {
            "proxy": {"listen": f"127.0.0.1:{proxy_port}"},
            "admin": {"listen": f"127.0.0.1:{admin_port}"},
        },
    }
    if extra:
        config = _deep_merge(config, extra)
    path = Path(tmpdir) / (filename or f"config.{fmt}")
    if fmt == "json":
        text = json.dumps(config, indent=2) + "\n"
    else:
        text = yaml.safe_dump(config, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


# -- the gateway process ---------------------------------------------------


class GatewayExited(AssertionError):
    """The gateway exited while a test waited for it to serve; carries its output."""


class GatewayTimeout(AssertionError):
    """The gateway did not reach the awaited state in time; carries its output."""


class GatewayProcess:
    """The gateway under test, as a subprocess of this interpreter.

    ``mode="twistd"`` runs ``twistd -n --pidfile= twisted-gw --config PATH``,
    ``mode="console"`` runs ``python -m twisted_gw --config PATH`` (what the
    ``twisted-gw`` console script runs).  Both use ``sys.executable``, so the
    gateway runs in the test's environment.  ``config_path=None`` omits
    ``--config`` (to test the ``./config.yaml`` fallback; set ``cwd``).

    The working directory defaults to the config file's directory.  stdout and
    stderr go to files (``stdout_path``, ``stderr_path``) in ``log_dir``
    (default: the working directory, else a fresh temporary directory), so
    output is never lost to a full pipe and is there to read after exit.
    """

    def __init__(
        self,
        config_path: str | os.PathLike[str] | None,
        mode: GatewayMode = "twistd",
        cwd: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if mode not in ("twistd", "console"):
            raise ValueError(f"unknown mode {mode!r}")
        self.config_path = Path(config_path) if config_path is not None else None
        self.mode = mode
        if cwd is None and self.config_path is not None:
            cwd = self.config_path.resolve().parent
        self.cwd = Path(cwd) if cwd is not None else None
        self.extra_args = tuple(extra_args)
        self._env_overrides = dict(env or {})
        directory = log_dir or self.cwd or tempfile.mkdtemp(prefix="twisted-gw-test-")
        self._log_dir = Path(directory)
        self.stdout_path: Path | None = None
        self.stderr_path: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._started_at: float | None = None
        self._files: list[Any] = []

    # -- how it is launched --

    @property
    def argv(self) -> list[str]:
        """The command line; a subclass may override it to run something else."""
        config = ["--config", str(self.config_path)] if self.config_path is not None else []
        if self.mode == "twistd":
            twistd = "from twisted.scripts.twistd import run; run()"
            head = [sys.executable, "-c", twistd, "-n", "--pidfile=", "twisted-gw"]
        else:
            head = [sys.executable, "-m", "twisted_gw"]
        return [*head, *config, *self.extra_args]

    @property
    def env(self) -> dict[str, str]:
        """The subprocess environment: ours, this checkout first on the path, unbuffered."""
        env = dict(os.environ)
        path = [str(REPO_ROOT)]
        if env.get("PYTHONPATH"):
            path.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(path)
        # Start-up failures are asserted from stdout; nothing may sit in a buffer.
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self._env_overrides)
        return env

    # -- lifecycle --

    def start(self) -> Self:
        """Launch the process; returns self for chaining."""
        if self._process is not None:
            raise RuntimeError("gateway process already started")
        self._log_dir.mkdir(parents=True, exist_ok=True)
        out_fd, out_name = tempfile.mkstemp(prefix="gateway-", suffix=".stdout", dir=self._log_dir)
        err_fd, err_name = tempfile.mkstemp(prefix="gateway-", suffix=".stderr", dir=self._log_dir)
        self.stdout_path, self.stderr_path = Path(out_name), Path(err_name)
        stdout, stderr = os.fdopen(out_fd, "wb"), os.fdopen(err_fd, "wb")
        self._files = [stdout, stderr]
        self._started_at = time.monotonic()
        self._process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
        return self

    @property
    def pid(self) -> int | None:
        """The process id, once started."""
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has exited, else None."""
        return self._process.poll() if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self._process is not None and self._process.poll() is None

    def wait_ready(
        self, ports: Iterable[int], timeout: float = 10.0, host: str = "127.0.0.1"
    ) -> None:
        """Block until every port accepts connections.

        Polling with a short sleep is acceptable here only because the socket
        belongs to another process, which cannot notify us.  Fails at once,
        with the captured output, if the process exits meanwhile.
        """
        process = self._require_started()
        deadline = time.monotonic() + timeout
        pending = list(ports)
        while True:
            if process.poll() is not None:
                raise GatewayExited(self._describe(f"gateway exited with {process.returncode}"))
            pending = [port for port in pending if not is_listening(port, host, timeout=0.2)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise GatewayTimeout(self._describe(f"ports {pending} not ready in {timeout}s"))
            time.sleep(0.02)

    async def async_wait_ready(
        self,
        ports: Iterable[int],
        reactor: Any = None,
        timeout: float = 10.0,
        host: str = "127.0.0.1",
    ) -> None:
        """:meth:`wait_ready` for reactor tests: polls without blocking the reactor.

        The reactor keeps running between attempts, so a MockUpstream it hosts
        can serve the gateway while the gateway starts.
        """
        from twisted.internet.task import deferLater

        reactor = _reactor(reactor)
        process = self._require_started()
        deadline = time.monotonic() + timeout
        pending = list(ports)
        while True:
            if process.poll() is not None:
                raise GatewayExited(self._describe(f"gateway exited with {process.returncode}"))
            still = []
            for port in pending:
                if not await _accepts(reactor, host, port):
                    still.append(port)
            pending = still
            if not pending:
                return
            if time.monotonic() > deadline:
                raise GatewayTimeout(self._describe(f"ports {pending} not ready in {timeout}s"))
            await deferLater(reactor, 0.02, lambda: None)

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` (SIGTERM by default), wait, and return the exit code.

        Kills the process if it has not exited within ``timeout`` seconds (the
        exit code is then the kill's, which a clean-shutdown test will see).
        """
        process = self._require_started()
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close_files()
        return process.returncode

    def signal(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` and return at once (a shutdown test watches what follows)."""
        self._require_started().send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for the process to exit by itself; its exit code.

        Kills it if it is still running after ``timeout`` seconds and raises
        :class:`GatewayTimeout` with its output."""
        process = self._require_started()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            self._close_files()
            raise GatewayTimeout(
                self._describe(f"gateway still running after {timeout}s")
            ) from None
        self._close_files()
        return process.returncode

    def run_to_exit(self, timeout: float = 5.0) -> tuple[int, str, str, float]:
        """Start (if needed), wait for the process to exit by itself.

        For start-up failure tests: returns ``(exit_code, stdout, stderr,
        elapsed_seconds)``, elapsed counted from launching the process.  If it
        is still running after ``timeout`` it is killed and
        :class:`GatewayTimeout` is raised with its output.
        """
        if self._process is None:
            self.start()
        code = self.wait(timeout)
        assert self._started_at is not None
        elapsed = time.monotonic() - self._started_at
        return code, self.stdout, self.stderr, elapsed

    def __enter__(self) -> Self:
        if self._process is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self.stop()

    # -- output --

    @property
    def stdout(self) -> str:
        """Everything the process wrote to stdout so far."""
        return _read(self.stdout_path)

    @property
    def stderr(self) -> str:
        """Everything the process wrote to stderr so far."""
        return _read(self.stderr_path)

    @property
    def output(self) -> str:
        """stdout and stderr, labelled, for assertion messages and greps."""
        return f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"

    def _describe(self, what: str) -> str:
        return f"{what}\ncommand: {self.argv}\n{self.output}"

    def _require_started(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("gateway process not started")
        return self._process

    def _close_files(self) -> None:
        for f in self._files:
            f.close()
        self._files = []


def _read(path: Path | None) -> str:
    if path is None or not path.exists():
        return ""
    return path.read_bytes().decode("utf-8", "replace")


def _reactor(reactor: Any) -> Any:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        return default_reactor
    return reactor


async def _accepts(reactor: Any, host: str, port: int) -> bool:
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
    from twisted.internet.error import ConnectError
    from twisted.internet.protocol import Factory, Protocol

    endpoint_type = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
    endpoint = endpoint_type(reactor, host, port, timeout=1)
    try:
        protocol = await endpoint.connect(Factory.forProtocol(Protocol))
    except ConnectError:  # refused, timed out, unreachable: not listening (yet)
        return False
    protocol.transport.loseConnection()
    return True


# -- TLS -------------------------------------------------------------------


def make_self_signed_cert(
    directory: str | os.PathLike[str], hostname: str = "localhost", prefix: str | None = None
) -> tuple[Path, Path]:
    """Write a self-signed RSA 2048 certificate and its key as PEM files.

    The SAN covers ``hostname``, ``localhost`` and ``127.0.0.1``, so a client
    that verifies against this certificate accepts the gateway on either name.
    Returns ``(cert_path, key_path)``, named ``<prefix>-cert.pem`` and
    ``<prefix>-key.pem`` (prefix defaults to the hostname).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    if hostname != "localhost":
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(hostname)))
        except ValueError:
            names.append(x509.DNSName(hostname))
    if hostname != "127.0.0.1":
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    stem = prefix or hostname
    cert_path, key_path = out / f"{stem}-cert.pem", out / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# -- blocking client -------------------------------------------------------


def _encode_body(headers: dict[str, str], body: bytes | str | None, json_body: Any) -> bytes | None:
    if json_body is not None:
        if body is not None:
            raise ValueError("give body or json_body, not both")
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
        return json.dumps(json_body).encode("utf-8")
    if isinstance(body, str):
        return body.encode("utf-8")
    return body


def http(
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | str | None = None,
    timeout: float = 10.0,
    verify_tls: bool = False,
    *,
    json_body: Any = None,
    cafile: str | os.PathLike[str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One blocking HTTP request: ``(status, headers, body)``.

    Header names come back lowercase; repeated headers are joined with
    ``", "``.  For https, the certificate is not checked unless
    ``verify_tls`` is true or a ``cafile`` (e.g. the self-signed cert) is
    given.  Only for tests without a running reactor: it blocks the thread.
    """
    parts = urlsplit(url)
    request_headers = dict(headers or {})
    data = _encode_body(request_headers, body, json_body)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection: HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        if not verify_tls and cafile is None:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        connection = HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=context)
    else:
        connection = HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, target, body=data, headers=request_headers)
        response = connection.getresponse()
        payload = response.read()
        result: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            result[key] = f"{result[key]}, {value}" if key in result else value
        return response.status, result, payload
    finally:
        connection.close()


# -- reactor clients -------------------------------------------------------


def _treq_client(reactor: Any, verify_tls: bool, cafile: str | os.PathLike[str] | None) -> Any:
    """A treq client with its own non-persistent pool.

    A fresh non-persistent pool per call leaves no idle connection behind a
    test, and keeps one test's sockets out of the next test's counts.
    """
    from treq.client import HTTPClient
    from twisted.internet import ssl as tssl
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
    from twisted.web.iweb import IPolicyForHTTPS
    from zope.interface import implementer

    @implementer(IPolicyForHTTPS)
    class _Unverified:
        def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
            return tssl.CertificateOptions(verify=False)

    policy: Any
    if cafile is not None:
        root = tssl.Certificate.loadPEM(Path(cafile).read_bytes())
        policy = BrowserLikePolicyForHTTPS(trustRoot=root)
    elif verify_tls:
        policy = BrowserLikePolicyForHTTPS()
    else:
        policy = _Unverified()
    pool = HTTPConnectionPool(reactor, persistent=False)
    return HTTPClient(Agent(reactor, contextFactory=policy, pool=pool))


async def _bounded(work: Coroutine[Any, Any, _T], timeout: float, reactor: Any) -> _T:
    """Run ``work``, cancelling it after ``timeout`` seconds.

    Cancelling a treq request surfaces as ``ResponseNeverReceived`` or
    ``ResponseFailed`` rather than ``CancelledError``, which
    ``Deferred.addTimeout`` would not recognise; whatever the cancellation
    raised, a test sees :class:`twisted.internet.defer.TimeoutError`.
    """
    running = Deferred.fromCoroutine(work)
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        running.cancel()

    timer = reactor.callLater(timeout, expire)
    try:
        return await running
    except Exception as e:
        if expired:
            raise defer.TimeoutError(timeout, "no complete response") from e
        raise
    finally:
        if timer.active():
            timer.cancel()


def _header_dict(headers: Any) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): ", ".join(v.decode("latin-1") for v in values)
        for name, values in headers.getAllRawHeaders()
    }


def _request_kwargs(
    headers: Mapping[str, str] | None, body: bytes | str | None, json_body: Any
) -> dict[str, Any]:
    request_headers = dict(headers or {})
    data = _encode_body(request_headers, body, json_body)
    kwargs: dict[str, Any] = {"headers": request_headers}
    if data is not None:
        kwargs["data"] = data
    return kwargs


async def treq_json(
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    *,
    body: bytes | str | None = None,
    timeout: float = 10.0,
    reactor: Any = None,
    verify_tls: bool = False,
    cafile: str | os.PathLike[str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """:func:`http` for reactor tests: ``(status, headers, body)`` without blocking.

    ``timeout`` bounds the whole exchange, body included; past it the request
    is cancelled (its connection dropped) and
    :class:`twisted.internet.defer.TimeoutError` raised.
    """
    reactor = _reactor(reactor)
    client = _treq_client(reactor, verify_tls, cafile)
    kwargs = _request_kwargs(headers, body, json_body)

    async def exchange() -> tuple[int, dict[str, str], bytes]:
        response = await client.request(method, url, **kwargs)
        payload = await response.content()
        return response.code, _header_dict(response.headers), payload

    return await _bounded(exchange(), timeout, reactor)


@dataclass
class StreamResult:
    """A response body as it arrived, piece by piece, and how it ended.

    ``ended`` is ``"done"`` (the body ended as HTTP says it should),
    ``"cut"`` (the connection was lost before that: e.g. chunked body
    without its terminator) or ``"stopped"`` (``stop_when`` made us drop it).
    ``arrivals`` holds the reactor time of each piece in ``chunks``.
    """

    status: int
    headers: dict[str, str]
    chunks: list[bytes] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    ended: Literal["done", "cut", "stopped"] = "done"
    started_at: float = 0.0
    ended_at: float = 0.0

    @property
    def body(self) -> bytes:
        """All pieces joined."""
        return b"".join(self.chunks)

    @property
    def events(self) -> list[bytes]:
        """The SSE events of the body (frames separated by a blank line)."""
        normalized = self.body.replace(b"\r\n", b"\n")
        return [event for event in normalized.split(b"\n\n") if event.strip()]

    @property
    def data(self) -> list[str]:
        """The ``data:`` payloads of the SSE events, in order (``[DONE]`` included)."""
        payloads = []
        for event in self.events:
            lines = [
                line[5:].removeprefix(b" ")
                for line in event.split(b"\n")
                if line.startswith(b"data:")
            ]
            if lines:
                payloads.append(b"\n".join(lines).decode("utf-8"))
        return payloads

    @property
    def json_chunks(self) -> list[Any]:
        """The ``data:`` payloads parsed as JSON, ``[DONE]`` left out."""
        return [json.loads(d) for d in self.data if d != "[DONE]"]


async def treq_stream(
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    *,
    body: bytes | str | None = None,
    stop_when: Callable[[bytes], bool] | None = None,
    timeout: float = 10.0,
    reactor: Any = None,
    verify_tls: bool = False,
    cafile: str | os.PathLike[str] | None = None,
) -> StreamResult:
    """Read a (streamed) response as it arrives, optionally walking away.

    Each piece is recorded with its arrival time, so a test can check that
    events were relayed as they came, not buffered.  ``stop_when(body_so_far)``
    is called after each piece; when it returns true the client drops the
    connection, which is how "the client goes away mid-stream" is tested.
    ``timeout`` bounds the whole exchange.
    """
    from twisted.internet.protocol import Protocol
    from twisted.web.client import ResponseDone
    from twisted.web.http import PotentialDataLoss

    reactor = _reactor(reactor)
    client = _treq_client(reactor, verify_tls, cafile)
    kwargs = _request_kwargs(headers, body, json_body)
    started_at = reactor.seconds()

    async def exchange() -> StreamResult:
        response = await client.request(method, url, unbuffered=True, **kwargs)
        result = StreamResult(response.code, _header_dict(response.headers), started_at=started_at)

        class Collector(Protocol):
            stopped = False

            def dataReceived(self, data: bytes) -> None:
                if self.stopped:
                    return
                result.chunks.append(data)
                result.arrivals.append(reactor.seconds())
                if stop_when is not None and stop_when(result.body):
                    self.stopped = True
                    self.transport.stopProducing()

            def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
                result.ended_at = reactor.seconds()
                if self.stopped:
                    result.ended = "stopped"
                elif reason.check(ResponseDone, PotentialDataLoss):
                    result.ended = "done"
                else:
                    result.ended = "cut"
                if not done.called:
                    done.callback(result)

        collector = Collector()

        def cancel(_: Deferred[StreamResult]) -> None:
            collector.stopped = True
            if collector.transport is not None:
                collector.transport.stopProducing()

        done: Deferred[StreamResult] = Deferred(canceller=cancel)
        response.deliverBody(collector)
        return await done

    return await _bounded(exchange(), timeout, reactor)
