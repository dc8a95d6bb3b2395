"""The ``bedrock`` provider type (CONTRACT-NEXT 1.1): OpenAI chat on Amazon
Bedrock's Converse API, SigV4-signed, its streams in AWS's binary event
stream.

First the pure parts (the translation both ways, exact dicts; the URLs; the
signature, at a fixed clock, checked against an implementation of SigV4
written here from AWS's specification), then the event-stream body read
in memory (frames built by a small encoder written here from AWS's
event-stream format, since botocore only decodes), then the real gateway
process, reached through the official ``openai`` SDK, against a fake Bedrock
on a socket that checks every request's signature and path and answers
Converse JSON and real event-stream frames.
"""

from __future__ import annotations

import binascii
import datetime
import hashlib
import hmac
import json
import re
import struct
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import openai
import pytest
import pytest_twisted
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from twisted.internet import reactor, threads
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web._newclient import TransportProxyProducer
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tests.conftest import secret
from tests.streamcheck import no_unhandled_errors
from tests.support.gateway import treq_json
from tests.support.twisted_fakes import RecordingTCP
from twisted_gw.config.snapshot import Snapshot, StoredEntry
from twisted_gw.errors import GatewayError
from twisted_gw.providers import types
from twisted_gw.providers.bedrock import (
    EVENT_STREAM,
    ConverseDialect,
    EventStreamSource,
    signed_headers,
)
from twisted_gw.providers.bedrock_translate import (
    ConverseStreamTranslator,
    from_converse_response,
    to_converse_request,
)
from twisted_gw.providers.interfaces import CHAT
from twisted_gw.providers.translated import UpstreamStreamError

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
HAIKU_PATH = "/model/anthropic.claude-3-haiku-20240307-v1%3A0"

# -- the AWS side, written here from AWS's documents (test-only) ----------------------------


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total length, headers length, CRC32
    of both), headers (name length u8, name, type 7 = string, value length
    u16, value), payload, then the CRC32 of everything before it."""
    head = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        head += struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v
    prelude = struct.pack(">II", 12 + len(head) + len(payload) + 4, len(head))
    message = prelude + struct.pack(">I", binascii.crc32(prelude)) + head + payload
    return message + struct.pack(">I", binascii.crc32(message))


def event(kind: str, doc: dict) -> bytes:
    """A Converse stream event as Bedrock frames it."""
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, json.dumps(doc).encode())


def exception(kind: str, message: str) -> bytes:
    headers = {
        ":exception-type": kind,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return frame(headers, json.dumps({"message": message}).encode())


_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})"
)


def sigv4_problem(
    method: str, raw_path: str, headers: dict[str, str], body: bytes, secrets: dict[str, str]
) -> str | None:
    """What is wrong with a request's SigV4 signature (None: nothing), checked
    as AWS documents it: canonical request (the path as sent, URI-encoded once
    more; no query; the signed headers, lower case, values trimmed; the body's
    SHA-256), string to sign, the key derived from the secret by date,
    region, service and ``aws4_request``."""
    match = _AUTH.fullmatch(headers.get("authorization", ""))
    if match is None:
        return f"not a SigV4 Authorization: {headers.get('authorization')!r}"
    when = headers.get("x-amz-date", "")
    if not re.fullmatch(r"\d{8}T\d{6}Z", when) or when[:8] != match["date"]:
        return f"x-amz-date {when!r} is not the credential's date"
    if (match["region"], match["service"]) != ("us-east-1", "bedrock"):
        return f"scope {match['region']}/{match['service']}"
    signed = match["signed"].split(";")
    if signed != sorted(signed) or not {"host", "x-amz-date", "content-type"} <= set(signed):
        return f"signed headers {signed}"
    if match["key"] not in secrets:
        return f"unknown access key {match['key']}"
    canonical = "\n".join(
        [
            method,
            quote(raw_path, safe="/~"),
            "",
            "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in signed),
            ";".join(signed),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{when[:8]}/us-east-1/bedrock/aws4_request"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = f"AWS4-HMAC-SHA256\n{when}\n{scope}\n{digest}"
    key = ("AWS4" + secrets[match["key"]]).encode()
    for part in (when[:8], "us-east-1", "bedrock", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, match["signature"]):
        return "signature mismatch"
    return None


# -- pure: the request -----------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_a_chat_request_becomes_a_converse_body():
    body = {
        "model": "haiku",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {
                        "id": "tooluse_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "tooluse_1", "content": "-3 C"},
            {"role": "user", "content": "And tomorrow?", "name": "ann"},
        ],
        "max_tokens": 100,
        "max_completion_tokens": 200,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "END",
        "tools": [WEATHER],
        "tool_choice": "auto",
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u-1",
        "seed": 7,
        "parallel_tool_calls": True,
    }
    assert to_converse_request(body) == {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": "Weather here?"},
                    {"image": {"format": "png", "source": {"bytes": "iVBO"}}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"text": "Let me look."},
                    {
                        "toolUse": {
                            "toolUseId": "tooluse_1",
                            "name": "get_weather",
                            "input": {"city": "Oslo"},
                        }
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "-3 C"}]}},
                    {"text": "And tomorrow?"},
                ],
            },
        ],
        "system": [{"text": "Be brief."}, {"text": "Use metric."}],
        "inferenceConfig": {
            "maxTokens": 200,
            "temperature": 0.2,
            "topP": 0.9,
            "stopSequences": ["END"],
        },
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "get_weather",
                        "description": "The weather in a city",
                        "inputSchema": {
                            "json": {"type": "object", "properties": {"city": {"type": "string"}}}
                        },
                    }
                }
            ],
            "toolChoice": {"auto": {}},
        },
    }
    assert body["messages"][5]["name"] == "ann"  # the client's body is not changed


def test_the_smallest_request_has_only_messages():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert to_converse_request(body) == {
        "messages": [{"role": "user", "content": [{"text": "hi"}]}]
    }


SPECS = to_converse_request({"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER]})[
    "toolConfig"
]["tools"]


@pytest.mark.parametrize(
    "choice, config",
    [
        (None, {"tools": SPECS}),
        ("auto", {"tools": SPECS, "toolChoice": {"auto": {}}}),
        ("required", {"tools": SPECS, "toolChoice": {"any": {}}}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"tools": SPECS, "toolChoice": {"tool": {"name": "get_weather"}}},
        ),
        ("none", None),  # Converse has no "none": the tools are not given at all
    ],
)
def test_tool_choice(choice, config):
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER]}
    if choice is not None:
        body["tool_choice"] = choice
    assert to_converse_request(body).get("toolConfig") == config


def test_a_pdf_file_becomes_a_named_document_and_a_list_stop_stays_a_list():
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}}
                ],
            }
        ],
        "stop": ["a", "b"],
    }
    assert to_converse_request(body) == {
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "document": {
                            "format": "pdf",
                            "name": "document-0-0",
                            "source": {"bytes": "JVBE"},
                        }
                    }
                ],
            }
        ],
        "inferenceConfig": {"stopSequences": ["a", "b"]},
    }


@pytest.mark.parametrize(
    "extra, text",
    [
        ({"n": 2}, "'n' other than 1"),
        ({"logprobs": True}, "'logprobs'"),
        ({"logit_bias": {"1": 1}}, "'logit_bias'"),
        ({"response_format": {"type": "json_object"}}, "'response_format' type 'json_object'"),
        ({"functions": []}, "deprecated"),
        ({"modalities": ["text", "audio"]}, "audio output"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "content part type 'input_audio'",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/p.png"}}],
                    }
                ]
            },
            "data URLs",
        ),
        ({"tools": [{"type": "web_search"}]}, "tool type 'web_search'"),
    ],
)
def test_what_converse_cannot_honour_is_a_400(extra, text):
    body = {"messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(GatewayError) as caught:
        to_converse_request(body)
    assert caught.value.status == 400 and text in caught.value.message


# -- pure: the answer ------------------------------------------------------------------------


def test_a_converse_answer_becomes_a_chat_completion():
    doc = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s"}}},
                    {"text": "Checking."},
                    {
                        "toolUse": {
                            "toolUseId": "tooluse_9",
                            "name": "get_weather",
                            "input": {"city": "Oslo"},
                        }
                    },
                ],
            }
        },
        "stopReason": "tool_use",
        "usage": {"inputTokens": 12, "outputTokens": 5, "totalTokens": 17},
        "metrics": {"latencyMs": 321},
    }
    assert from_converse_response(doc, 1700000000, "chatcmpl-r1", HAIKU) == {
        "id": "chatcmpl-r1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": HAIKU,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Checking.",
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "tooluse_9",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                        }
                    ],
                    "reasoning_content": "hmm",
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 5,
            "total_tokens": 17,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }


@pytest.mark.parametrize(
    "stop, finish",
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons(stop, finish):
    doc = {"output": {"message": {"content": [{"text": "x"}]}}, "stopReason": stop}
    assert from_converse_response(doc, 0, "i", "m")["choices"][0]["finish_reason"] == finish


def test_cached_prompt_tokens_count_in_the_prompt():
    doc = {
        "output": {"message": {"content": []}},
        "stopReason": "end_turn",
        "usage": {
            "inputTokens": 3,
            "outputTokens": 2,
            "totalTokens": 105,
            "cacheReadInputTokens": 60,
            "cacheWriteInputTokens": 40,
        },
    }
    answer = from_converse_response(doc, 0, "i", "m")
    assert answer["choices"][0]["message"]["content"] is None
    assert answer["usage"] == {
        "prompt_tokens": 103,
        "completion_tokens": 2,
        "total_tokens": 105,
        "prompt_tokens_details": {"cached_tokens": 60},
    }


# -- pure: the stream's events ---------------------------------------------------------------

EV = {":message-type": "event", ":content-type": "application/json"}


def feed_all(translator: ConverseStreamTranslator, events: list[tuple[str, dict]]) -> list[dict]:
    out = []
    for kind, doc in events:
        out.extend(translator.feed({**EV, ":event-type": kind}, json.dumps(doc).encode()))
    return out


def chunk(delta: dict, finish: str | None = None) -> dict:
    return {
        "id": "chatcmpl-s1",
        "object": "chat.completion.chunk",
        "created": 5,
        "model": HAIKU,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


TEXT_AND_TOOL = [
    ("messageStart", {"role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}, "p": "abc"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "lo"}}),
    ("contentBlockStop", {"contentBlockIndex": 0}),
    (
        "contentBlockStart",
        {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu_1", "name": "f"}}},
    ),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"a":'}}}),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "1}"}}}),
    ("contentBlockStop", {"contentBlockIndex": 1}),
    ("messageStop", {"stopReason": "tool_use"}),
    (
        "metadata",
        {
            "usage": {"inputTokens": 9, "outputTokens": 4, "totalTokens": 13},
            "metrics": {"latencyMs": 50},
        },
    ),
]


def test_a_converse_stream_becomes_openai_chunks():
    translator = ConverseStreamTranslator(5, "chatcmpl-s1", HAIKU)
    chunks = feed_all(translator, TEXT_AND_TOOL)
    assert chunks == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "tu_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        chunk({}, "tool_calls"),
        {
            "id": "chatcmpl-s1",
            "object": "chat.completion.chunk",
            "created": 5,
            "model": HAIKU,
            "choices": [],
            "usage": {
                "prompt_tokens": 9,
                "completion_tokens": 4,
                "total_tokens": 13,
                "prompt_tokens_details": {"cached_tokens": 0},
            },
        },
    ]
    assert translator.complete
    assert feed_all(translator, [("contentBlockDelta", {"delta": {"text": "late"}})]) == []


def test_the_stream_is_whole_at_message_stop_and_complete_at_metadata():
    translator = ConverseStreamTranslator(5, "chatcmpl-s1", HAIKU)
    feed_all(translator, TEXT_AND_TOOL[:8])
    assert not translator.stopped and not translator.complete
    feed_all(translator, [TEXT_AND_TOOL[8]])
    assert translator.stopped and not translator.complete
    feed_all(translator, [TEXT_AND_TOOL[9]])
    assert translator.complete


def test_unknown_events_give_nothing_and_reasoning_is_relayed():
    translator = ConverseStreamTranslator(5, "chatcmpl-s1", HAIKU)
    chunks = feed_all(
        translator,
        [
            ("somethingNew", {"x": 1}),
            ("contentBlockDelta", {"delta": {"reasoningContent": {"text": "think"}}}),
            ("contentBlockDelta", {"delta": {"reasoningContent": {"signature": "sig"}}}),
        ],
    )
    assert chunks == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "think"}),
    ]


def test_an_exception_event_is_an_upstream_stream_error_without_secrets():
    translator = ConverseStreamTranslator(5, "i", "m", secrets=("s3cr3t-key",))
    headers = {":message-type": "exception", ":exception-type": "throttlingException"}
    payload = json.dumps({"message": "slow down s3cr3t-key"}).encode()
    with pytest.raises(UpstreamStreamError) as caught:
        translator.feed(headers, payload)
    assert str(caught.value) == "upstream error event (throttlingException): slow down [redacted]"
    with pytest.raises(UpstreamStreamError, match="malformed event"):
        translator.feed({**EV, ":event-type": "contentBlockDelta"}, b"not json")


# -- pure: URLs, signing, resolution ---------------------------------------------------------

CONFIG = {
    "region": "us-east-1",
    "access_key_id": "AKIDEXAMPLE",
    "secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
}
BEDROCK = types.BY_NAME["bedrock"]


def test_the_urls_of_a_bedrock_model():
    urls = types.endpoint_urls(BEDROCK, CONFIG, HAIKU)
    base = "https://bedrock-runtime.us-east-1.amazonaws.com" + HAIKU_PATH
    assert urls == {CHAT: base + "/converse", types.STREAM_URL: base + "/converse-stream"}
    arn = "arn:aws:bedrock:eu-west-1:123:inference-profile/eu.x"
    custom = types.endpoint_urls(BEDROCK, {**CONFIG, "endpoint": "http://127.0.0.1:9/"}, arn)
    assert custom[CHAT] == (
        "http://127.0.0.1:9/model/arn%3Aaws%3Abedrock%3Aeu-west-1%3A123%3Ainference-profile"
        "%2Feu.x/converse"
    )


@pytest.fixture
def fixed_clock(monkeypatch):
    """botocore's signer reads the time through botocore.auth.get_current_datetime."""
    at = datetime.datetime(2024, 1, 2, 3, 4, 5)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda remove_tzinfo=True: at)


URL = "https://bedrock-runtime.us-east-1.amazonaws.com" + HAIKU_PATH + "/converse"


def as_text(headers: dict[bytes, list[bytes]]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, (v,) in headers.items()}


def test_each_request_is_signed_with_sigv4_over_its_exact_body(fixed_clock):
    body = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'
    headers = as_text(signed_headers(URL, body, CONFIG))
    assert headers == {
        "host": "bedrock-runtime.us-east-1.amazonaws.com",
        "content-type": "application/json",
        "accept": "application/json",
        "x-amz-date": "20240102T030405Z",
        "authorization": (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240102/us-east-1/bedrock/aws4_request, "
            "SignedHeaders=accept;content-type;host;x-amz-date, "
            "Signature=" + headers["authorization"].rsplit("=", 1)[1]
        ),
    }
    secrets = {"AKIDEXAMPLE": CONFIG["secret_access_key"]}
    # AWS's side (written from its documents) accepts it: the path double-encoded, the body hashed
    assert sigv4_problem("POST", HAIKU_PATH + "/converse", headers, body, secrets) is None
    assert sigv4_problem("POST", HAIKU_PATH + "/converse", headers, body + b" ", secrets)
    # and botocore, signing the same request at the same moment, writes the same header
    again = AWSRequest(method="POST", url=URL, data=body, headers={"host": headers["host"]})
    again.headers["content-type"] = "application/json"
    again.headers["accept"] = "application/json"
    SigV4Auth(
        Credentials("AKIDEXAMPLE", CONFIG["secret_access_key"]), "bedrock", "us-east-1"
    ).add_auth(again)
    assert again.headers["Authorization"] == headers["authorization"]


def test_a_session_token_is_sent_and_signed(fixed_clock):
    headers = as_text(
        signed_headers(URL, b"{}", {**CONFIG, "session_token": "FwoGZXIvYXdzEXAMPLE"}, EVENT_STREAM)
    )
    assert headers["x-amz-security-token"] == "FwoGZXIvYXdzEXAMPLE"
    assert headers["accept"] == EVENT_STREAM
    assert (
        "SignedHeaders=accept;content-type;host;x-amz-date;x-amz-security-token,"
        in (headers["authorization"])
    )
    secrets = {"AKIDEXAMPLE": CONFIG["secret_access_key"]}
    assert sigv4_problem("POST", HAIKU_PATH + "/converse", headers, b"{}", secrets) is None


@pytest.mark.parametrize(
    "url, host",
    [
        ("http://127.0.0.1:8443/model/m/converse", "127.0.0.1:8443"),
        (
            "https://vpce-1.bedrock-runtime.us-east-1.vpce.amazonaws.com:443/model/m/converse",
            "vpce-1.bedrock-runtime.us-east-1.vpce.amazonaws.com",
        ),
        ("http://[::1]:80/model/m/converse", "[::1]"),
    ],
)
def test_the_signed_host_is_the_one_sent(url, host):
    assert signed_headers(url, b"{}", CONFIG)[b"host"] == [host.encode()]


def test_the_snapshot_gives_a_bedrock_model_its_provider_s_config():
    config = {**CONFIG, "endpoint": "http://127.0.0.1:9"}
    snap = Snapshot.build(
        [
            StoredEntry(
                "/providers/aws", {"name": "aws", "type": "bedrock", "config": config}, 1, 1
            ),
            StoredEntry("/models/m", {"name": "haiku", "provider_id": "aws", "model": HAIKU}, 1, 1),
        ]
    )
    model = snap.models_by_name["haiku"]
    assert model.provider == "provider:bedrock"
    assert dict(model.provider_config) == config
    assert (
        model.endpoint_urls[types.STREAM_URL] == f"http://127.0.0.1:9{HAIKU_PATH}/converse-stream"
    )
    assert CONFIG["secret_access_key"] not in repr(model)
    assert snap.redact("key " + CONFIG["secret_access_key"]) == "key [redacted]"


# -- the event-stream body, in memory --------------------------------------------------------


class FakeResponse:
    """The part of IResponse a source uses: ``deliverBody``."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.protocol: Any = None

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)


class Sink:
    def __init__(self) -> None:
        self.chunks: list[dict] = []
        self.ends: list[tuple[bool, str]] = []
        self.flushes = 0

    def chunk(self, data: bytes) -> None:
        assert not self.ends
        self.chunks.append(json.loads(data))

    def flush(self) -> None:
        self.flushes += 1

    def upstream_ended(self, clean: bool, detail: str) -> None:
        self.ends.append((clean, detail))


class Body:
    """An EventStreamSource started on a fake response, over a recording transport."""

    def __init__(self, max_event_bytes: int = 1 << 20) -> None:
        self.clock = Clock()
        self.tcp = RecordingTCP()
        self.response = FakeResponse(TransportProxyProducer(self.tcp))
        translator = ConverseStreamTranslator(5, "chatcmpl-s1", HAIKU)
        self.source = EventStreamSource(
            self.response,
            self.clock,
            max_event_bytes=max_event_bytes,
            dialect=ConverseDialect(translator),
        )
        self.sink = Sink()
        self.source.start(self.sink)
        self.protocol = self.response.protocol

    def send(self, *pieces: bytes) -> None:
        for piece in pieces:
            self.protocol.dataReceived(piece)

    def end(self, exc: BaseException | None = None) -> None:
        self.protocol.connectionLost(Failure(exc if exc is not None else ResponseDone()))


FRAMES = b"".join(event(kind, doc) for kind, doc in TEXT_AND_TOOL)


def test_frames_split_anywhere_give_the_chunks_and_end_clean_at_metadata():
    body = Body()
    body.send(*(FRAMES[i : i + 1] for i in range(len(FRAMES))))  # one byte a read
    whole = ConverseStreamTranslator(5, "chatcmpl-s1", HAIKU)
    assert body.sink.chunks == feed_all(whole, TEXT_AND_TOOL)
    assert body.sink.ends == [(True, "end of stream")]  # at once, before the body ends
    body.send(event("contentBlockDelta", {"delta": {"text": "after"}}))
    assert len(body.sink.chunks) == 8
    body.clock.advance(5)  # the upstream keeps its body open: dropped after the drain time
    assert "abort" in body.tcp.calls
    body.end()
    assert body.sink.ends == [(True, "end of stream")]


def test_a_body_that_ends_after_message_stop_without_metadata_is_whole():
    body = Body()
    body.send(b"".join(event(k, d) for k, d in TEXT_AND_TOOL[:9]))
    assert body.sink.ends == []
    body.end()
    assert body.sink.ends == [(True, "end of stream")]
    assert body.sink.chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_body_that_ends_before_message_stop_was_cut():
    body = Body()
    body.send(b"".join(event(k, d) for k, d in TEXT_AND_TOOL[:3]))
    body.end()
    assert body.sink.ends == [(False, "upstream stream ended before its final event")]
    lost = Body()
    lost.send(event(*TEXT_AND_TOOL[0]))
    lost.end(ResponseFailed([Failure(ConnectionError("reset"))]))
    assert lost.sink.ends == [(False, "upstream connection lost mid-stream")]


def test_an_empty_body_is_an_empty_stream():
    body = Body()
    body.end()
    assert body.sink.ends == [(True, "end of stream")] and body.sink.chunks == []


def test_a_bad_checksum_cuts_the_stream_after_what_came_before_it():
    good = event(*TEXT_AND_TOOL[0])
    bad = bytearray(event(*TEXT_AND_TOOL[1]))
    bad[-6] ^= 0xFF  # a payload byte: the message CRC no longer matches
    body = Body()
    body.send(good + bytes(bad))
    assert [c["choices"][0]["delta"] for c in body.sink.chunks] == [
        {"role": "assistant", "content": ""}
    ]
    ((clean, detail),) = body.sink.ends
    assert not clean and detail.startswith("malformed upstream event stream")
    body.clock.advance(0)
    assert "abort" in body.tcp.calls


def test_an_event_over_the_bound_cuts_the_stream():
    body = Body(max_event_bytes=200)
    body.send(event("contentBlockDelta", {"delta": {"text": "x" * 300}})[:250])
    assert body.sink.ends == [(False, "upstream event exceeds 200 bytes")]


def test_an_exception_event_cuts_the_stream():
    body = Body()
    body.send(event(*TEXT_AND_TOOL[0]), exception("modelStreamErrorException", "boom"))
    assert body.sink.ends == [(False, "upstream error event (modelStreamErrorException): boom")]


def test_pause_resume_and_cancel_reach_the_connection():
    body = Body()
    body.send(event(*TEXT_AND_TOOL[0]))
    body.source.pause()
    body.source.resume()
    body.source.cancel()
    body.clock.advance(0)
    assert body.tcp.calls[:2] == ["pause", "resume"] and "abort" in body.tcp.calls
    body.send(event(*TEXT_AND_TOOL[1]))
    body.end()
    assert len(body.sink.chunks) == 1 and body.sink.ends == []  # nothing after cancel


# -- black-box: the real gateway, the openai SDK, a fake Bedrock --------------------------


@dataclass
class Seen:
    """One request as the fake Bedrock saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    signature_problem: str | None

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeBedrock(Resource):
    """Bedrock's runtime as far as Converse goes: every request's SigV4
    signature is checked (a bad one gets AWS's 403), then the next queued
    answer is given, else a default one by path."""

    isLeaf = True
    secrets: dict[str, str] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    answers: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        Resource.__init__(self)

    def render_POST(self, request: Any) -> Any:
        body = request.content.read()
        headers = {
            k.decode().lower(): b", ".join(v).decode()
            for k, v in request.requestHeaders.getAllRawHeaders()
        }
        path = request.uri.decode()
        problem = sigv4_problem("POST", path, headers, body, self.secrets)
        self.requests.append(Seen(path, headers, body, problem))
        request.setHeader(b"x-amzn-requestid", b"req-%d" % len(self.requests))
        if problem is not None:
            return self.json(request, 403, {"message": f"signature: {problem}"})
        if self.answers:
            answer = self.answers.pop(0)
        elif path.endswith("/converse-stream"):
            answer = FRAMES
        else:
            answer = (200, CONVERSE_ANSWER)
        if isinstance(answer, tuple):
            return self.json(request, *answer)
        request.setHeader(b"content-type", EVENT_STREAM.encode())
        cut = answer.endswith(b"CUT")
        request.write(answer.removesuffix(b"CUT"))
        if cut:
            reactor.callLater(0.05, request.channel.transport.abortConnection)
        else:
            request.finish()
        return NOT_DONE_YET

    @staticmethod
    def json(request: Any, status: int, doc: dict) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(doc).encode()


CONVERSE_ANSWER = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Hello from Bedrock."}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 11, "outputTokens": 4, "totalTokens": 15},
    "metrics": {"latencyMs": 120},
}


@pytest.fixture(scope="module")
def bedrock(gateway):
    fake = FakeBedrock()
    port = reactor.listenTCP(0, Site(fake), interface="127.0.0.1")
    endpoint = f"http://127.0.0.1:{port.getHost().port}"
    state: dict[str, Any] = {"fake": fake}

    async def build() -> None:
        for pid, extra in (("aws", {}), ("aws-sts", {"session_token": secret("sts")})):
            key_id = "AKIA" + secret("id")[3:19].upper()
            config = {
                "region": "us-east-1",
                "access_key_id": key_id,
                "secret_access_key": secret("aws"),
                "endpoint": endpoint,
                **extra,
            }
            fake.secrets[key_id] = config["secret_access_key"]
            state[pid] = config
            doc = {"name": pid, "type": "bedrock", "config": config}
            assert (await gateway.aadmin("PUT", f"/aisix/admin/providers/{pid}", doc))[0] == 201
        for name, pid in (("haiku", "aws"), ("haiku-sts", "aws-sts")):
            doc = {"name": name, "provider_id": pid, "model": HAIKU}
            assert (await gateway.aadmin("PUT", f"/aisix/admin/models/{name}", doc))[0] == 201
        state["key"] = await gateway.add_key(["haiku", "haiku-sts"])

    from twisted.internet import defer

    pytest_twisted.blockon(defer.ensureDeferred(build()))
    state["client"] = openai.OpenAI(
        api_key=state["key"], base_url=gateway.proxy + "/v1", max_retries=0, timeout=10
    )
    yield state
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def fake(bedrock) -> FakeBedrock:
    bedrock["fake"].requests.clear()
    bedrock["fake"].answers.clear()
    return bedrock["fake"]


def in_thread(f, *args, **kwargs):
    return threads.deferToThread(f, *args, **kwargs)


HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


@pytest_twisted.ensureDeferred
async def test_sdk_chat_completion_through_converse(bedrock, fake):
    completion = await in_thread(
        bedrock["client"].chat.completions.create,
        model="haiku",
        messages=HELLO,
        max_tokens=64,
        temperature=0,
    )
    assert completion.object == "chat.completion"
    assert completion.id == "chatcmpl-req-1" and completion.model == HAIKU
    assert completion.choices[0].message.content == "Hello from Bedrock."
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 4, 15)
    (seen,) = fake.requests
    assert seen.path == HAIKU_PATH + "/converse"
    assert seen.signature_problem is None
    assert seen.headers["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={bedrock['aws']['access_key_id']}/"
    )
    signed_at = datetime.datetime.strptime(seen.headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
    assert abs(signed_at.replace(tzinfo=datetime.UTC).timestamp() - time.time()) < 60
    assert "x-amz-security-token" not in seen.headers
    assert seen.json == {
        "messages": [{"role": "user", "content": [{"text": "Hi"}]}],
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {"maxTokens": 64, "temperature": 0},
    }


@pytest_twisted.ensureDeferred
async def test_sdk_stream_through_converse_stream(bedrock, fake):
    def collect():
        stream = bedrock["client"].chat.completions.create(
            model="haiku-sts",
            messages=HELLO,
            tools=[WEATHER],
            stream=True,
            stream_options={"include_usage": True},
        )
        return list(stream)

    chunks = await in_thread(collect)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello"
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].id == "tu_1" and calls[0].function.name == "f"
    assert "".join(tc.function.arguments or "" for tc in calls) == '{"a":1}'
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "tool_calls"
    assert chunks[-1].usage.total_tokens == 13 and chunks[-1].id == "chatcmpl-req-1"
    (seen,) = fake.requests
    assert seen.path == HAIKU_PATH + "/converse-stream"
    assert seen.signature_problem is None
    assert seen.headers["accept"] == EVENT_STREAM
    assert seen.headers["x-amz-security-token"] == bedrock["aws-sts"]["session_token"]
    assert "x-amz-security-token" in seen.headers["authorization"]
    assert seen.json["toolConfig"]["tools"][0]["toolSpec"]["name"] == "get_weather"
    assert "stream" not in seen.json and "stream_options" not in seen.json


@pytest_twisted.ensureDeferred
async def test_a_tool_call_round_trip(bedrock, fake):
    fake.answers.append(
        (
            200,
            {
                "output": {
                    "message": {
                        "role": "assistant",
                        "content": [
                            {
                                "toolUse": {
                                    "toolUseId": "tooluse_x",
                                    "name": "get_weather",
                                    "input": {"city": "Oslo"},
                                }
                            }
                        ],
                    }
                },
                "stopReason": "tool_use",
                "usage": {"inputTokens": 20, "outputTokens": 8, "totalTokens": 28},
            },
        )
    )
    client = bedrock["client"]
    first = await in_thread(
        client.chat.completions.create, model="haiku", messages=HELLO, tools=[WEATHER]
    )
    (call,) = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls"
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "tooluse_x",
        "get_weather",
        {"city": "Oslo"},
    )
    follow = [
        *HELLO,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "-3 C"},
    ]
    second = await in_thread(
        client.chat.completions.create, model="haiku", messages=follow, tools=[WEATHER]
    )
    assert second.choices[0].message.content == "Hello from Bedrock."
    turns = fake.requests[-1].json["messages"]
    assert turns[1:] == [
        {
            "role": "assistant",
            "content": [
                {
                    "toolUse": {
                        "toolUseId": "tooluse_x",
                        "name": "get_weather",
                        "input": {"city": "Oslo"},
                    }
                }
            ],
        },
        {
            "role": "user",
            "content": [{"toolResult": {"toolUseId": "tooluse_x", "content": [{"text": "-3 C"}]}}],
        },
    ]


@pytest_twisted.ensureDeferred
async def test_bedrock_errors_are_the_contract_s(bedrock, fake):
    client = bedrock["client"]
    fake.answers.append((400, {"message": "Malformed input request: bad"}))
    with pytest.raises(openai.BadRequestError) as caught:
        await in_thread(client.chat.completions.create, model="haiku", messages=HELLO)
    assert caught.value.body["message"] == "Malformed input request: bad"
    fake.answers.append((429, {"message": "Too many requests, please wait."}))
    with pytest.raises(openai.RateLimitError):
        await in_thread(client.chat.completions.create, model="haiku", messages=HELLO)
    fake.answers.append(
        (403, {"message": "The security token included in the request is invalid."})
    )
    with pytest.raises(openai.APIStatusError) as caught:
        await in_thread(client.chat.completions.create, model="haiku", messages=HELLO)
    assert caught.value.status_code == 502
    assert "rejected the provider credentials (403)" in caught.value.body["message"]
    fake.answers.append((400, {"message": "stream refused"}))
    with pytest.raises(openai.BadRequestError):
        await in_thread(client.chat.completions.create, model="haiku", messages=HELLO, stream=True)
    with pytest.raises(openai.BadRequestError) as caught:
        await in_thread(client.embeddings.create, model="haiku", input="x")
    assert caught.value.body["code"] == "unsupported_endpoint"
    assert all(seen.signature_problem is None for seen in fake.requests)


async def raw_stream(gateway, key: str) -> tuple[int, bytes]:
    status, _, body = await treq_json(
        "POST",
        gateway.proxy + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        json_body={"model": "haiku", "messages": HELLO, "stream": True},
    )
    return status, body


@pytest_twisted.ensureDeferred
async def test_stream_failures_in_the_event_stream(gateway, bedrock, fake):
    # an exception before any chunk: a 502 JSON error
    fake.answers.append(exception("throttlingException", "Too many tokens"))
    status, body = await raw_stream(gateway, bedrock["key"])
    assert status == 502, body
    assert "throttlingException" in json.loads(body)["error"]["message"]
    # after chunks: the stream ends without [DONE]
    fake.answers.append(
        FRAMES[: len(b"".join(event(k, d) for k, d in TEXT_AND_TOOL[:3]))]
        + exception("modelStreamErrorException", "model failed")
    )
    status, body = await raw_stream(gateway, bedrock["key"])
    assert status == 200 and b'"Hel"' in body and b"[DONE]" not in body
    # a connection lost before messageStop: cut too
    fake.answers.append(b"".join(event(k, d) for k, d in TEXT_AND_TOOL[:3]) + b"CUT")
    status, body = await raw_stream(gateway, bedrock["key"])
    assert status == 200 and b'"lo"' in body and b"[DONE]" not in body
    # a whole stream ends with [DONE]
    status, body = await raw_stream(gateway, bedrock["key"])
    assert status == 200 and body.endswith(b"data: [DONE]\n\n")


@pytest_twisted.ensureDeferred
async def test_a_whole_answer_to_a_stream_request_is_relayed_as_a_stream(gateway, bedrock, fake):
    fake.answers.append((200, CONVERSE_ANSWER))  # JSON where an event stream was asked for
    status, body = await raw_stream(gateway, bedrock["key"])
    assert status == 200 and body.endswith(b"data: [DONE]\n\n")
    events = [
        json.loads(line[6:]) for line in body.split(b"\n\n") if line[6:] not in (b"", b"[DONE]")
    ]
    assert events[0]["choices"][0]["delta"]["content"] == "Hello from Bedrock."
    assert events[-1]["usage"]["total_tokens"] == 15


@pytest_twisted.ensureDeferred
async def test_a_bedrock_provider_needs_its_credentials(gateway):
    doc = {"name": "aws", "type": "bedrock", "config": {"api_key": secret()}}
    status, body = await gateway.aadmin("POST", "/aisix/admin/providers", doc)
    assert status == 400
    assert body["error_msg"].startswith('JSON schema validation error: property "/config"')
    assert "region" in body["error_msg"]


def test_the_gateway_logged_no_traceback(gateway, bedrock):
    no_unhandled_errors(gateway.process)
