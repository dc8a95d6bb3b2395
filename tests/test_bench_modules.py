"""The bench's own pure parts, without starting anything: the command line, the
raw-socket stream client's chunked/SSE decoding (on a scripted socket), the
percentile, and the py-spy profile reader. The bench itself is run by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import _peer
import _profile
import _report
import _streams
import overhead
from _common import BenchError

# -- the command line -----------------------------------------------------------------


def test_defaults_run_both_modes_at_three_levels():
    args = overhead.parse_args([])
    assert args.concurrency == [1, 16, 64]
    assert (args.duration, args.warmup, args.cold_runs) == (5, 1, 3)
    assert (args.mode, args.stream, args.nonstream) == ("both", True, True)
    assert (args.chunk_gap_ms, args.ttfb_idle_ms) == (200.0, 5.0)
    assert args.profiler == "auto" and not args.profile and not args.keep


def test_stream_flag_is_mode_stream_and_levels_are_sorted_unique():
    args = overhead.parse_args(["--stream", "--concurrency", "16,1,1"])
    assert (args.mode, args.stream, args.nonstream) == ("stream", True, False)
    assert args.concurrency == [1, 16]


def test_numbers_take_the_type_of_their_default():
    args = overhead.parse_args(["--chunk-gap-ms", "2.5", "--gap-streams", "4"])
    assert args.chunk_gap_ms == 2.5 and args.gap_streams == 4
    with pytest.raises(SystemExit):
        overhead.parse_args(["--duration", "1.5"])


def test_a_peer_is_off_by_default_and_its_requests_name_its_model():
    args = overhead.parse_args([])
    assert args.peer == "" and args.peer_name == "peer" and args.peer_key == "sk-bench"
    args = overhead.parse_args(["--peer", "litellm --port {port}", "--peer-model", "openai/x"])
    assert args.peer == "litellm --port {port}" and args.peer_model == "openai/x"
    asked = _peer.peer_body(overhead.STREAM_REQUEST_BODY, "openai/x")
    assert '"model":"openai/x"' in asked and '"stream":true' in asked
    assert _peer.peer_body(overhead.REQUEST_BODY, "bench") == overhead.REQUEST_BODY


@pytest.mark.parametrize(
    "argv",
    [
        ["--duration", "0"],
        ["--concurrency", "a"],
        ["--concurrency", "0"],
        ["--gap-chunks", "2"],
        ["--chunk-gap-ms", "-1"],
        ["--ttfb-streams", "0"],
        ["--mode", "fast"],
    ],
)
def test_out_of_range_options_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        overhead.parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_every_option_is_written_once():
    flags = [row[0] for row in overhead.OPTIONS]
    assert len(flags) == len(set(flags))


# -- the stream client ----------------------------------------------------------------

EVENTS = [b'data: {"a":1,"bench_sent_ns":123}\n\n', b'data: {"b":2}\n\n', b"data: [DONE]\n\n"]


def chunked_response(events: list[bytes], headers: str = "") -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"
    head = f"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{headers}\r\n"
    return head.encode() + body


class ScriptedSocket:
    """Hands out a response in pieces of ``size`` bytes, one per recv."""

    def __init__(self, data: bytes, size: int) -> None:
        self.pieces = [data[i : i + size] for i in range(0, len(data), size)]
        self.sent = b""
        self.closed = False

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def recv(self, _n: int) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""

    def close(self) -> None:
        self.closed = True


def client_on(sock: ScriptedSocket) -> _streams.StreamClient:
    client = _streams.StreamClient(0)
    client.sock = sock  # type: ignore[assignment]
    return client


@pytest.mark.parametrize("size", [1, 3, 7, 1 << 20])
def test_stream_client_decodes_chunks_and_events_however_the_reads_split(size):
    sock = ScriptedSocket(chunked_response(EVENTS), size)
    timing = client_on(sock).stream('{"stream":true}')
    assert len(timing.events) == 3 and timing.done
    assert timing.upstream_sent == [123, None, None]
    assert timing.sent <= timing.first_byte <= timing.events[0] <= timing.end
    assert sock.sent.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert sock.sent.endswith(b'\r\n\r\n{"stream":true}')
    assert not sock.closed  # keep-alive: the next stream reuses it


def test_stream_client_closes_when_the_server_says_connection_close():
    sock = ScriptedSocket(chunked_response(EVENTS, "Connection: close\r\n"), 5)
    client = client_on(sock)
    client.stream("{}")
    assert sock.closed and client.sock is None


def test_a_connection_closed_mid_stream_is_a_bench_error():
    sock = ScriptedSocket(chunked_response(EVENTS)[:-10], 4)
    with pytest.raises(BenchError, match="closed the connection mid-response"):
        client_on(sock).stream("{}")
    assert sock.closed


def test_a_stream_must_carry_its_events_then_done():
    def run(events: int, answer: list[bytes]) -> _streams.StreamTiming:
        return _streams.checked(
            client_on(ScriptedSocket(chunked_response(answer), 64)), "{}", events, "x"
        )

    assert run(2, EVENTS).done
    with pytest.raises(BenchError, match="expected 3 \\+ \\[DONE\\]"):
        run(3, EVENTS)
    with pytest.raises(BenchError, match="done=False"):
        run(2, EVENTS[:2] + [b'data: {"c":3}\n\n'])


# -- figures --------------------------------------------------------------------------


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(100, 0, -1)]
    assert _report.percentile(values, 50) == 50.0
    assert _report.percentile(values, 99) == 99.0
    assert _report.percentile(values, 100) == 100.0
    assert _report.percentile([7.0], 1) == 7.0


# -- the profile reader ---------------------------------------------------------------

COLLAPSED = """\
main (app.py:1);Request.requestReceived (twisted/web/http.py:10);loads (json/__init__.py:5) 3
main (app.py:1);Request.requestReceived (twisted/web/http.py:10) 2
worker (threading.py:1);Thread.wait (/usr/lib/python3.11/threading.py:300) 7
"""


def read_profile(tmp_path: Path) -> _profile.Profile:
    path = tmp_path / "pyspy.txt"
    path.write_text(COLLAPSED)
    return _profile.parse_pyspy_raw(str(path))


def test_pyspy_stacks_give_self_and_inclusive_samples_without_parked_threads(tmp_path):
    prof = read_profile(tmp_path)
    assert (prof.total, prof.parked) == (5, 7)
    rows = {r.func: r for r in prof.rows}
    assert (rows["loads"].self_value, rows["loads"].cum_value) == (3, 3)
    assert (rows["Request.requestReceived"].self_value, rows["main"].cum_value) == (2, 5)


def test_hotspots_count_each_sample_once_and_can_require_a_caller(tmp_path):
    prof = read_profile(tmp_path)
    assert prof.hotspot({"Request.requestReceived", "loads"}, "") == 5
    assert prof.hotspot({"loads"}, "json/", under={"Request.requestReceived"}) == 3
    assert prof.hotspot({"loads"}, "json/", under={"StreamRelay.chunk"}) == 0


def test_stack_subset_keeps_the_stacks_through_a_root_and_none_excluded(tmp_path):
    prof = read_profile(tmp_path)
    root = {("Request.requestReceived", "twisted/web/http.py")}
    assert _profile.stack_subset(prof, root).total == 5
    assert _profile.stack_subset(prof, root, {("loads", "json/")}).total == 2


def test_print_profile_per_stream_names_the_stream_unit(tmp_path, capsys):
    _profile.print_profile(read_profile(tmp_path), 5, 1000.0, stream=True)
    out = capsys.readouterr().out
    assert "Top 5 functions by self time (tottime), % of 5 samples:" in out
    assert "us/st  function" in out
    assert "Hot spots (inclusive time, us of gateway CPU per stream):" in out
    assert "Self time by subsystem:" in out
