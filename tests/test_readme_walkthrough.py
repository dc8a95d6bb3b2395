"""The README's set-up commands and walk-through, run the way a newcomer
would (issue 16 item 6): the commands as written, with bash (``python`` for
the SDK snippets), against the gateway the README's own command starts.

Which blocks run is said in the README itself, by an HTML comment on the
line right before a fenced block (GitHub does not render it):

``<!-- readme-test: serve -->``
    a command that runs the gateway in the foreground. The first one starts
    the gateway the walk-through talks to, as a subprocess; it must serve on
    both ports and, at the end, stop on Ctrl+C (SIGINT to its process group)
    with exit code 0. Every other one is started once the walk-through is
    done, must serve, and must stop on Ctrl+C too (twistd ends by the signal
    once it has shut down).
``<!-- readme-test: run -->``
    run in README order against that gateway: ``sh`` blocks with ``bash -e
    -o pipefail`` (so every command of the block must exit 0), after the
    variable assignments of the ``run`` blocks before it (what the
    newcomer's shell still holds, e.g. ``ADMIN=...``); ``python`` blocks with
    this interpreter.
``<!-- readme-test: prints -->``
    what the block before it prints: each line's pieces between ``...`` must
    appear in its output in that order (line breaks are not compared: curl
    ends no answer with one).
``<!-- readme-test: daemon -->`` / ``<!-- readme-test: daemon-stop -->``
    run after the foreground gateways: the first must exit 0 and leave a
    daemon serving with its pid file, the second must exit 0 and leave
    neither.
``<!-- readme-test: skip REASON -->``
    not run (it installs something, or needs a provider's key or the
    internet); reported as a skip with REASON.

Substitutions, and only these: every command runs in a scratch directory
holding a copy of ``examples/`` (so ``examples/demo.yaml``, its store file,
``gw.log`` and ``gw.pid`` are the scratch directory's), and the README's ports
3000 (proxy) and 3001 (admin), in that copy of the config, in the commands
and in what they print, become two free ports. ``twisted-gw`` and ``twistd``
are the commands on ``PATH``; this checkout comes first on ``PYTHONPATH``, so
they run this checkout's gateway.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import SESSION_LOGS
from tests.support.gateway import REPO_ROOT, GatewayProcess, free_port, is_listening

README = REPO_ROOT / "README.md"
#: the sections whose every block must carry a marker
WALKTHROUGH = ("Run it, test it", "Walk-through")
KINDS = ("serve", "run", "prints", "daemon", "daemon-stop", "skip")

_MARKER = re.compile(r"^<!-- readme-test: ([a-z-]+)(?: (.*?))? -->$")
_FENCE = re.compile(r"^```(\w*)$")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S")
_PORT = re.compile(r"\b(localhost|127\.0\.0\.1):(3000|3001)\b")


@dataclass
class Block:
    """One fenced block of the README and its marker (``kind`` None: none)."""

    line: int  # of the opening fence, 1-based
    section: str
    lang: str
    code: str
    kind: str | None = None
    reason: str = ""
    prints: str | None = None  # the ``prints`` block that follows it

    @property
    def id(self) -> str:
        return f"line{self.line}-{self.kind}"


def read_blocks(text: str) -> list[Block]:
    """Every fenced block of ``text``, with the marker right before it; a
    ``prints`` block is attached to the block it follows."""
    lines = text.splitlines()
    blocks: list[Block] = []
    section, marker, i = "", None, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        elif m := _MARKER.match(line):
            marker = (m.group(1), m.group(2) or "")
        elif m := _FENCE.match(line):
            end = lines.index("```", i + 1)
            kind, reason = marker or (None, "")
            block = Block(i + 1, section, m.group(1), "\n".join(lines[i + 1 : end]) + "\n")
            block.kind, block.reason = kind, reason
            if kind == "prints" and blocks and blocks[-1].kind != "prints":
                blocks[-1].prints = block.code
            blocks.append(block)
            marker, i = None, end
        elif line.strip():
            marker = None  # a marker belongs to the block right after it
        i += 1
    return blocks


BLOCKS = read_blocks(README.read_text(encoding="utf-8"))
SERVE = [b for b in BLOCKS if b.kind == "serve"]
WALK = [b for b in BLOCKS if b.kind in ("run", "skip")]


# -- what a block prints ------------------------------------------------------------


def missing_piece(expected: str, output: str) -> str | None:
    """The first piece of ``expected`` (its lines split at ``...``) that
    ``output`` does not have after the pieces before it; None if all are."""
    at = 0
    for line in expected.splitlines():
        for piece in (p.strip() for p in line.split("...")):
            if not piece:
                continue
            found = output.find(piece, at)
            if found < 0:
                return piece
            at = found + len(piece)
    return None


def test_missing_piece_reads_ellipses_and_order():
    out = '{"id":"x-1","object":"chat.completion","model":"demo"}{"total": 2}'
    assert missing_piece('{"id":"x-...","object":"chat.completion",...\n{"total": 2}', out) is None
    assert missing_piece('{"total": 2}\n{"id":"x-', out) == '{"id":"x-'  # order counts
    assert missing_piece('"model":"echo"', out) == '"model":"echo"'


# -- the README's markers ---------------------------------------------------------------


def test_every_block_of_the_set_up_and_the_walk_through_is_marked():
    """A command added to these sections without a marker would go untested."""
    sections = {b.section for b in BLOCKS}
    assert set(WALKTHROUGH) <= sections, sorted(sections)
    unmarked = [
        f"README.md:{b.line} ({b.section})"
        for b in BLOCKS
        if b.section in WALKTHROUGH and b.kind is None
    ]
    assert unmarked == []
    for block in BLOCKS:
        assert block.kind is None or block.kind in KINDS, f"README.md:{block.line}"
        if block.kind == "skip":
            assert block.reason, f"README.md:{block.line}: a skip says why"
        if block.kind in ("run", "serve", "daemon", "daemon-stop"):
            assert block.lang in ("sh", "python"), f"README.md:{block.line}"
    assert SERVE and SERVE[0].code.strip() == "twisted-gw --config examples/demo.yaml"
    assert [b.kind for b in BLOCKS if b.kind in ("daemon", "daemon-stop")] == [
        "daemon",
        "daemon-stop",
    ]
    # the real provider's example is the one that says it needs a key
    needs_key = [b for b in BLOCKS if b.kind == "skip" and "key" in b.reason]
    assert any("openai/gpt-4.1-mini" in b.code for b in needs_key)
    assert not any("sk-your-openai-key" in b.code for b in BLOCKS if b.kind == "run")


# -- the scratch directory and the gateway ----------------------------------------------


@dataclass
class Scratch:
    """Where the commands run, and the two ports they use instead of 3000/3001."""

    path: Path
    proxy: int
    admin: int

    def ports(self, text: str) -> str:
        """``text`` with the README's ports changed to this run's."""
        return _PORT.sub(
            lambda m: f"{m.group(1)}:{self.proxy if m.group(2) == '3000' else self.admin}", text
        )

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def run(
        self, block: Block, prelude: str = "", timeout: float = 60
    ) -> subprocess.CompletedProcess:
        code = self.ports(block.code)
        if block.lang == "python":
            argv = [sys.executable, "-"]
        else:
            argv, code = ["bash", "-e", "-o", "pipefail"], prelude + code
        return subprocess.run(
            argv,
            input=code,
            capture_output=True,
            text=True,
            cwd=self.path,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def wait(self, serving: bool, timeout: float = 15) -> bool:
        """Whether both ports reached ``serving`` (accepting or not) in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(is_listening(p) == serving for p in (self.proxy, self.admin)):
                return True
            time.sleep(0.05)
        return False


class Foreground(GatewayProcess):
    """A ``serve`` block run by bash as its own process group, as a terminal
    runs a foreground command; Ctrl+C is SIGINT to that group."""

    def __init__(self, scratch: Scratch, block: Block) -> None:
        super().__init__(None, cwd=scratch.path, env=scratch.env, log_dir=scratch.path)
        self.command = scratch.ports(block.code).strip()

    @property
    def argv(self) -> list[str]:
        return ["bash", "-c", self.command]

    def start(self) -> Foreground:
        """Launch in a new session: its own process group, as an interactive
        shell runs a job, so Ctrl+C reaches bash and the gateway alike."""
        out = open(self._log_dir / f"serve-{time.monotonic_ns()}.stdout", "wb")  # noqa: SIM115
        err = open(self._log_dir / f"serve-{time.monotonic_ns()}.stderr", "wb")  # noqa: SIM115
        self.stdout_path, self.stderr_path = Path(out.name), Path(err.name)
        self._files = [out, err]
        self._process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        return self

    def ctrl_c(self, timeout: float = 15) -> int:
        """SIGINT to the process group; the exit code once it has gone."""
        assert self.pid is not None
        process = self._require_started()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass  # stop() ends it, and its exit code says it did not stop on Ctrl+C
        return self.stop()


def _needs(command: str) -> None:
    if shutil.which(command) is None:
        pytest.skip(f"{command} is not on PATH (pip install . puts it there)")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Scratch:
    path = tmp_path_factory.mktemp("readme")
    shutil.copytree(
        REPO_ROOT / "examples", path / "examples", ignore=shutil.ignore_patterns("*store*.json")
    )
    scratch = Scratch(path, free_port(), free_port())
    config = path / "examples" / "demo.yaml"
    text = config.read_text(encoding="utf-8")
    assert "127.0.0.1:3000" in text and "127.0.0.1:3001" in text  # what the README promises
    config.write_text(scratch.ports(text), encoding="utf-8")
    return scratch


@pytest.fixture(scope="module")
def served(scratch):
    """The README's first ``serve`` command, running for the walk-through."""
    _needs("curl")
    _needs(SERVE[0].code.split()[0])
    process = Foreground(scratch, SERVE[0]).start()
    SESSION_LOGS.append(process)
    try:
        process.wait_ready([scratch.proxy, scratch.admin], timeout=20)
        yield process
    finally:
        if process.running:
            process.ctrl_c()


def test_the_readme_s_serve_command_serves_and_prints_what_the_readme_shows(served, scratch):
    expected = SERVE[0].prints
    assert expected, f"README.md:{SERVE[0].line}: say what it prints"
    deadline = time.monotonic() + 5  # the listening lines follow the bind at once
    while missing_piece(scratch.ports(expected), served.stdout) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert missing_piece(scratch.ports(expected), served.stdout) is None, served.output


def _prelude(block: Block) -> str:
    """The shell variables the ``run`` blocks before ``block`` set."""
    before = [b for b in WALK[: WALK.index(block)] if b.kind == "run" and b.lang == "sh"]
    return "".join(
        line + "\n" for b in before for line in b.code.splitlines() if _ASSIGNMENT.match(line)
    )


@pytest.mark.parametrize("block", WALK, ids=[b.id for b in WALK])
def test_walkthrough_block_runs_as_written(block, served, scratch):
    if block.kind == "skip":
        pytest.skip(f"README.md:{block.line}: {block.reason}")
    if block.lang == "python" and "openai" in block.code and not importlib.util.find_spec("openai"):
        pytest.skip(f"README.md:{block.line}: needs the openai package (pip install openai)")
    assert served.running, served.output
    done = scratch.run(block, _prelude(block))
    where = f"README.md:{block.line}\n--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
    assert done.returncode == 0, where
    if block.prints is not None:
        piece = missing_piece(scratch.ports(block.prints), done.stdout.replace("\r\n", "\n"))
        assert piece is None, f"{where}\nnot printed: {piece!r}"


# -- after the walk-through: Ctrl+C, the other foreground commands, the daemon ------


def test_ctrl_c_stops_the_gateway_and_the_other_serve_commands_serve(served, scratch):
    assert served.ctrl_c() == 0, served.output
    assert scratch.wait(serving=False), "a port is still open after Ctrl+C"
    for block in SERVE[1:]:
        _needs(block.code.split()[0])
        process = Foreground(scratch, block).start()
        SESSION_LOGS.append(process)
        try:
            process.wait_ready([scratch.proxy, scratch.admin], timeout=20)
        finally:
            code = process.ctrl_c()
        # twistd ends by its signal once shut down (a shell shows 130), as Ctrl+C should
        assert code in (0, -signal.SIGINT), f"README.md:{block.line}\n{process.output}"
        assert "Main loop terminated." in process.stdout, f"README.md:{block.line}"
        assert scratch.wait(serving=False), f"README.md:{block.line}: still listening"


def test_the_daemon_starts_and_stops_as_the_readme_says(scratch):
    start = next(b for b in BLOCKS if b.kind == "daemon")
    stop = next(b for b in BLOCKS if b.kind == "daemon-stop")
    _needs(start.code.split()[0])
    assert scratch.wait(serving=False), "the foreground gateway is still running"
    pidfile = scratch.path / "gw.pid"
    done = scratch.run(start, timeout=30)
    try:
        assert done.returncode == 0, f"README.md:{start.line}\n{done.stdout}\n{done.stderr}"
        assert scratch.wait(serving=True), (scratch.path / "gw.log").read_text()
        assert pidfile.read_text().strip().isdigit()
        done = scratch.run(stop, timeout=30)
        assert done.returncode == 0, f"README.md:{stop.line}\n{done.stdout}\n{done.stderr}"
        assert scratch.wait(serving=False), "the daemon still listens after the stop command"
        deadline = time.monotonic() + 10
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pidfile.exists(), "the daemon left its pid file"
        assert "Main loop terminated." in (scratch.path / "gw.log").read_text()
    finally:
        if pidfile.exists():  # a daemon this test started and failed to stop
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
