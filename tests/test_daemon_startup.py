"""CONTRACT 1 under a daemonizing twistd: ``twistd --logfile --pidfile twisted-gw``.

A start-up failure must end the command the operator ran as the foreground
launchers end (exit code 1 within a second, the message on its stdout, no
traceback), and also leave the message in the log file, no pid file and
nothing listening. A good start leaves a daemon with a pid file that SIGTERM
stops, pid file and all. Every daemon a test starts is killed at teardown
(found by its config path, which is unique to the test).

Unit tests at the end drive the start-up policy in memory: twistd's options
read into a :class:`~twisted_gw.service.Launch`, and a bind that fails after
the fork.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactor
from twisted.logger import globalLogPublisher

from tests.conftest import SESSION_LOGS
from tests.support.gateway import (
    GatewayProcess,
    free_port,
    http,
    is_listening,
    make_self_signed_cert,
    write_config,
)
from twisted_gw.config.file import ListenConfig, TLSConfig
from twisted_gw.service import (
    GatewayService,
    Launch,
    ListenerService,
    StartupError,
    TwistdLog,
    probe_bind,
)

LOG, PID = "gw.log", "gw.pid"
TWISTD = "from twisted.scripts.twistd import run; run()"


class Twistd(GatewayProcess):
    """twistd with its own options (``--logfile=gw.log --pidfile=gw.pid``, no ``-n``: daemon)."""

    def __init__(self, config_path: Path, *twistd_options: str) -> None:
        super().__init__(config_path)
        self.twistd_options = twistd_options or (f"--logfile={LOG}", f"--pidfile={PID}")

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-c", TWISTD, *self.twistd_options, "twisted-gw"] + [
            "--config",
            str(self.config_path),
        ]

    @property
    def log(self) -> str:
        path = self.cwd / LOG
        return path.read_text() if path.exists() else ""

    @property
    def pidfile(self) -> Path:
        return self.cwd / PID


def gateway_pids(config_path: Path) -> list[int]:
    """Live processes (not zombies) whose command line names ``config_path``."""
    needle = str(config_path).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "cmdline").read_bytes():
                continue
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:  # gone meanwhile
            continue
        if state != "Z":
            pids.append(int(entry.name))
    return pids


def poll(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Whether ``predicate`` holds within ``timeout``.

    The state belongs to another process (a daemon we cannot wait on), so
    there is nothing to await; a short poll with a deadline is the way.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def daemons():
    """Config paths of the daemons a test starts; whatever still runs is killed."""
    configs: list[Path] = []
    yield configs
    for config in configs:
        for pid in gateway_pids(config):
            os.kill(pid, signal.SIGKILL)


def run_failing(process: Twistd) -> tuple[int, str, float]:
    SESSION_LOGS.append(process)
    code, out, _err, elapsed = process.run_to_exit(timeout=5)
    return code, out, elapsed


def assert_reported(process: Twistd, code: int, out: str, elapsed: float, message: str) -> None:
    assert code == 1, process.output
    errors = [line for line in out.splitlines() if line.startswith("twisted-gw: error: ")]
    assert len(errors) == 1 and message in errors[0], process.output
    assert "Traceback" not in out
    assert elapsed < 1.0, f"took {elapsed:.3f}s"
    assert message in process.log, process.log
    assert "Traceback" not in process.log


def assert_nothing_left(process: Twistd, ports: list[int]) -> None:
    # after the fork, twistd removes its pid file just after it told the
    # launching command: poll rather than race it
    assert poll(lambda: not process.pidfile.exists()), "pid file left behind"
    assert poll(lambda: not gateway_pids(process.config_path)), "a daemon is still running"
    for port in ports:  # an exiting process leaves the list before its sockets close
        assert poll(lambda port=port: not is_listening(port)), f"port {port} still listening"


def test_daemon_port_in_use_exits_1_fast_with_the_message_on_stdout_and_in_the_log(
    tmp_path, daemons
):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proxy_port, admin_port = taken.getsockname()[1], free_port()
        config = write_config(tmp_path, proxy_port, admin_port)
        daemons.append(config)
        process = Twistd(config)
        code, out, elapsed = run_failing(process)
    message = (
        f"Proxy listener cannot bind 127.0.0.1:{proxy_port}: [Errno 98] Address already in use"
    )
    assert_reported(process, code, out, elapsed, message)
    assert not process.pidfile.exists()  # failed before the fork: never written
    assert_nothing_left(process, [admin_port])


def daemon_config_error(tmp_path: Path, case: str) -> tuple[dict, str]:
    _cert, key = make_self_signed_cert(tmp_path)
    if case == "tls cert missing":
        tls = {"enabled": True, "cert_file": "/nonexistent/c.pem", "key_file": str(key)}
        return {"server": {"proxy": {"tls": tls}}}, (
            "Proxy TLS cert_file '/nonexistent/c.pem' does not exist"
        )
    if case == "tls cert not PEM":
        tls = {"enabled": True, "cert_file": str(key), "key_file": str(key)}
        return {"server": {"admin": {"tls": tls}}}, "Expecting: CERTIFICATE"
    if case == "bad listen address":
        return {"server": {"proxy": {"listen": "invalid-listen-addr"}}}, "invalid-listen-addr"
    if case == "corrupt store":
        (tmp_path / "twisted-gw-store.json").write_text("{broken")
        return {}, str(tmp_path / "twisted-gw-store.json")
    assert case == "wrong type"
    return {"deployment": {"admin": {"admin_key": "my-admin"}}}, (
        "deployment.admin.admin_key must be a list of {key: ...}, got a string"
    )


@pytest.mark.parametrize(
    "case",
    ["tls cert missing", "tls cert not PEM", "bad listen address", "corrupt store", "wrong type"],
)
def test_daemon_config_errors_exit_1_fast_with_the_message_on_stdout_and_in_the_log(
    tmp_path, daemons, case
):
    extra, message = daemon_config_error(tmp_path, case)
    proxy_port, admin_port = free_port(), free_port()
    config = write_config(tmp_path, proxy_port, admin_port, extra=extra)
    daemons.append(config)
    process = Twistd(config)
    code, out, elapsed = run_failing(process)
    assert_reported(process, code, out, elapsed, message)
    assert not process.pidfile.exists()
    assert_nothing_left(process, [proxy_port, admin_port])


def test_daemon_bind_failure_after_the_fork_is_reported_the_same_way(tmp_path, daemons):
    # both listeners on one port: each probe passes on its own, the second bind fails
    # in the forked daemon, where twistd's status pipe carries the failure back
    port = free_port()
    config = write_config(tmp_path, port, port)
    daemons.append(config)
    process = Twistd(config)
    code, out, elapsed = run_failing(process)
    message = f"Admin listener cannot bind 127.0.0.1:{port}: [Errno 98] Address already in use"
    assert_reported(process, code, out, elapsed, message)
    assert "An error has occurred" in process.stderr  # twistd's own report, from the pipe
    assert_nothing_left(process, [port])


def test_daemon_that_starts_writes_its_pid_file_and_sigterm_stops_it(tmp_path, daemons):
    proxy_port, admin_port = free_port(), free_port()
    config = write_config(tmp_path, proxy_port, admin_port)
    daemons.append(config)
    process = Twistd(config)
    # pipes, not files: the launching command must end although the daemon
    # lives on, so the daemon must hold no copy of its stdout or stderr
    done = subprocess.run(
        process.argv, check=False, cwd=process.cwd, env=process.env, capture_output=True, timeout=10
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    pid = int(process.pidfile.read_text())
    assert gateway_pids(config) == [pid]
    assert is_listening(proxy_port) and is_listening(admin_port)
    status, _, _ = http("GET", f"http://127.0.0.1:{proxy_port}/v1/models")
    assert status == 401  # serving

    os.kill(pid, signal.SIGTERM)
    assert poll(lambda: not gateway_pids(config), timeout=10), "daemon still running"
    assert poll(lambda: not process.pidfile.exists()), "pid file left behind"
    assert poll(lambda: not is_listening(proxy_port) and not is_listening(admin_port))
    assert "Server Shut Down." in process.log


def test_daemon_warns_about_unknown_keys_on_stdout_and_in_the_log(tmp_path, daemons):
    config = write_config(
        tmp_path, free_port(), free_port(), extra={"server": {"proxy": {"listne": "x"}}}
    )
    daemons.append(config)
    process = Twistd(config)
    done = subprocess.run(
        process.argv, check=False, cwd=process.cwd, env=process.env, capture_output=True, timeout=10
    )
    warning = "unknown config key 'server.proxy.listne' (did you mean 'listen'?)"
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stdout.decode() == f"twisted-gw: warning: {warning}\n"
    assert poll(lambda: warning in process.log)
    os.kill(int(process.pidfile.read_text()), signal.SIGTERM)
    assert poll(lambda: not gateway_pids(config), timeout=10)


@pytest.mark.parametrize("same_port", [False, True], ids=["before the start", "while binding"])
def test_foreground_twistd_with_a_log_file_reports_there_too_and_removes_its_pid_file(
    tmp_path, daemons, same_port
):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proxy_port = free_port()
        admin_port = proxy_port if same_port else taken.getsockname()[1]
        config = write_config(tmp_path, proxy_port, admin_port)
        daemons.append(config)
        process = Twistd(config, "-n", f"--logfile={LOG}", f"--pidfile={PID}")
        code, out, elapsed = run_failing(process)
    message = (
        f"Admin listener cannot bind 127.0.0.1:{admin_port}: [Errno 98] Address already in use"
    )
    assert_reported(process, code, out, elapsed, message)
    assert not process.pidfile.exists()  # no process left to remove it later
    assert not is_listening(proxy_port)


# -- the start-up policy, in memory -----------------------------------------


def twistd_options(*argv: str):
    from twisted.scripts.twistd import ServerOptions

    options = ServerOptions()
    options.parseOptions([*argv, "twisted-gw"])
    assert options.subOptions.parent is options  # what the plugin reads
    return options


@pytest.mark.parametrize(
    "argv, daemon, log_to",
    [
        ((), True, TwistdLog(path="twistd.log")),  # twistd's default for a daemon
        (("--logfile=x.log",), True, TwistdLog(path="x.log")),
        (("-n",), False, None),  # the log is stdout, which has the message already
        (("-n", "--logfile=-"), False, None),
        (("-n", "--logfile=x.log"), False, TwistdLog(path="x.log")),
        (("--syslog", "--prefix=gw"), True, TwistdLog(syslog_prefix="gw")),
    ],
)
def test_launch_reads_twistds_options_as_twistd_does(argv, daemon, log_to):
    options = twistd_options(*argv)
    launch = Launch.from_twistd(options)
    assert (launch.daemon, launch.log_to) == (daemon, log_to)
    assert launch.pidfile == os.path.abspath("twistd.pid")  # twistd makes it absolute


class RefusingReactor(MemoryReactor):
    """listenTCP fails for one port, as a real one does when the port is taken."""

    def __init__(self, taken: int) -> None:
        super().__init__()
        self.taken = taken
        self.stopped: list[int] = []

    def listenTCP(self, port, factory, backlog=50, interface=""):
        if port == self.taken:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        listening = super().listenTCP(port, factory, backlog, interface)
        listening.stopListening = lambda: self.stopped.append(port)
        return listening


def gateway_on(reactor: MemoryReactor, launch: Launch) -> GatewayService:
    gateway = GatewayService(config=None, store=None, upstream=None)
    for name, port in (("Proxy", 4000), ("Admin", 4001)):
        listen = ListenConfig(name, "127.0.0.1", port, TLSConfig(), 30.0, 10)
        ListenerService(listen, site=None, reactor=reactor).setServiceParent(gateway)
    gateway.launch = launch
    return gateway


def test_a_bind_failure_in_a_daemon_is_an_exception_twistd_reports(capfd, monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # the failure quiets it
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    reactor = RefusingReactor(taken=4001)
    launch = Launch(daemon=True, log_to=TwistdLog(path="unused.log"))
    launch.hold_stdout()
    try:
        with pytest.raises(StartupError) as info:
            gateway_on(reactor, launch).privilegedStartService()
    finally:
        globalLogPublisher.removeObserver(events.append)
    message = "Admin listener cannot bind 127.0.0.1:4001: [Errno 98] Address already in use"
    assert str(info.value) == message
    assert isinstance(info.value, Exception)  # what twistd's postApplication handles
    assert reactor.stopped == [4000]  # the proxy port was bound, then released
    assert capfd.readouterr().out == f"twisted-gw: error: {message}\n"  # via the held stdout
    assert [e["message"] for e in events if e.get("log_level").name == "error"] == [message]
    assert launch._stdout is None  # released: nothing reading stdout waits on the daemon


def test_a_bind_failure_in_the_foreground_exits_1_and_removes_our_pid_file(tmp_path, capfd):
    pidfile = tmp_path / "twistd.pid"
    pidfile.write_text(str(os.getpid()))
    with pytest.raises(SystemExit) as info:
        gateway_on(
            RefusingReactor(taken=4000), Launch(pidfile=str(pidfile))
        ).privilegedStartService()
    assert info.value.code == 1
    assert not pidfile.exists()
    assert "Proxy listener cannot bind 127.0.0.1:4000" in capfd.readouterr().out
    pidfile.write_text("1")  # another process's pid file is not ours to remove
    with pytest.raises(SystemExit):
        gateway_on(
            RefusingReactor(taken=4000), Launch(pidfile=str(pidfile))
        ).privilegedStartService()
    assert pidfile.exists()


def test_probe_bind_reports_a_taken_port_and_skips_port_0():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listen = ListenConfig("Proxy", "127.0.0.1", port, TLSConfig(), 30.0, 10)
        assert probe_bind(listen) == (
            f"Proxy listener cannot bind 127.0.0.1:{port}: [Errno 98] Address already in use"
        )
    assert probe_bind(listen) is None  # free again, and the probe left it free
    assert probe_bind(ListenConfig("Admin", "127.0.0.1", 0, TLSConfig(), 30.0, 10)) is None
