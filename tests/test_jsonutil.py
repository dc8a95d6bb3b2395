"""Strict JSON in (issue 11, defect 2): whatever the gateway accepts it can
write back as strict JSON, and nothing else gets in."""

from __future__ import annotations

import json

import pytest

from twisted_gw.jsonutil import MAX_DEPTH, dumps, loads


@pytest.mark.parametrize(
    "text, problem",
    [
        ('"\\ud800"', "surrogate"),
        ('{"a": "x\\udfff"}', "surrogate"),
        ('{"\\ud83d": 1}', "surrogate"),  # a key too
        ('["\\ude00\\ud83d"]', "surrogate"),  # a pair in the wrong order
        ("[1e400]", "out of range"),
        ('{"t": -1e999}', "out of range"),
        ("NaN", "invalid number"),
        ("[Infinity]", "invalid number"),
        ("[" * 1000 + "]" * 1000, "recursion limit"),
        ("[" * 100_000, "recursion limit"),  # unclosed and deep
        ('{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1), "recursion limit"),
    ],
)
def test_refused_as_value_error(text, problem):
    with pytest.raises(ValueError, match=problem):
        loads(text.encode())


@pytest.mark.parametrize(
    "text",
    [
        '{"emoji": "\\ud83d\\ude00"}',  # a proper pair
        '{"a": "\\\\ud800"}',  # an escaped backslash, then text
        "[" * MAX_DEPTH + "]" * MAX_DEPTH,  # exactly the limit
        '{"s": "' + "[{" * 500 + '"}',  # brackets inside a string are text
        "[1" + "0" * 400 + "]",  # a big integer is kept exactly
        "[1e308, -1e-400]",
    ],
)
def test_accepted_and_written_back_as_strict_json(text):
    doc = loads(text.encode())
    out = dumps(doc)
    assert json.loads(out) == doc
    assert b"Infinity" not in out and b"NaN" not in out
    out.decode("utf-8")  # strict UTF-8


def test_big_integers_are_sent_on_digit_for_digit():
    assert dumps(loads(b'{"n": 1' + b"0" * 400 + b"}")) == b'{"n":1' + b"0" * 400 + b"}"


def test_dumps_refuses_to_write_non_finite_numbers():
    with pytest.raises(ValueError):
        dumps({"x": float("inf")})
