"""The strict JSON reader (chalicelib.jsonutil) on its own: what it accepts, what it refuses and
why, and that whatever it accepts can be encoded again exactly as the service encodes frames."""
from __future__ import annotations

import json
import sys
import time

import pytest
from hypothesis import example, given, settings as hsettings, strategies as st

from chalicelib.jsonutil import MAX_DEPTH, JSONRejected, loads

# text without surrogates: what a JSON string may legally hold
clean_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | clean_text
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(clean_text, children, max_size=4),
    max_leaves=20)


def encode_like_a_frame(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


@pytest.mark.parametrize("text, value", [
    ('{"a": [1, 2.5, -0.0, 1e308, "x", true, null]}', {"a": [1, 2.5, -0.0, 1e308, "x", True,
                                                             None]}),
    ('"\\ud83d\\ude00"', "\U0001F600"),  # a valid surrogate pair is one character
    ('"\\\\ud800"', "\\ud800"),  # an escaped backslash, not a surrogate escape
    ('"[[[[{{{{"', "[[[[{{{{"),  # brackets inside strings do not nest
    ("1e-400", 0.0),  # underflow is a finite number
    ("[" * MAX_DEPTH + "]" * MAX_DEPTH, json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)),
    (b'{"caf\xc3\xa9": 1}', {"café": 1}),
])
def test_accepts_strict_json(text, value):
    assert loads(text) == value


@pytest.mark.parametrize("text, reason, document", [
    ("1e400", "a number is out of range", float("inf")),
    ('{"id": 7, "x": [-1e999]}', "a number is out of range", {"id": 7, "x": [float("-inf")]}),
    ("[NaN]", "NaN and Infinity are not JSON", None),
    ("Infinity", "NaN and Infinity are not JSON", float("inf")),
    ('"\\ud800"', "a string holds a lone surrogate", "\ud800"),
    ('"\\udc00\\ud800"', "a string holds a lone surrogate", "\udc00\ud800"),
    ('{"\\uDFFF": 1}', "a string holds a lone surrogate", {"\udfff": 1}),
    ('"\ud800"', "a string holds a lone surrogate", "\ud800"),  # raw, in a str input
    ('{"a": 1, "b": {"c": 2, "c": 3}}', "duplicate JSON member name", {"a": 1, "b": {}}),
    ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), f"nested deeper than {MAX_DEPTH}", None),
    ('{"a":' * 10_000 + "1" + "}" * 10_000, f"nested deeper than {MAX_DEPTH}", None),
    ("[" * 100_000, f"nested deeper than {MAX_DEPTH}", None),
    ("{not json", "not valid JSON", None),
    ("", "not valid JSON", None),
    ("1" * 5000, "too many digits", None),
    (b"\xff\xfe{}", "not UTF-8", None),
    (b'"\xed\xa0\x80"', "not UTF-8", None),  # a surrogate encoded as UTF-8 bytes
    (None, "not a JSON text", None),
])
def test_refuses_with_a_short_reason(text, reason, document):
    with pytest.raises(JSONRejected) as info:
        loads(text)
    assert reason in info.value.reason
    assert isinstance(info.value, ValueError)
    if document is None or document != document:
        assert info.value.document is None or reason.startswith("NaN")
    else:
        assert info.value.document == document
    assert "ud800" not in info.value.reason and "1e400" not in info.value.reason


def test_the_depth_limit_can_be_lowered():
    assert loads("[[1]]", max_depth=2) == [[1]]
    with pytest.raises(JSONRejected, match="deeper than 1 levels"):
        loads("[[1]]", max_depth=1)


def test_hostile_texts_are_refused_in_linear_time():
    # an unterminated string full of escaped quotes, and a million brackets, stay cheap: no
    # quadratic regular expression, no recursion. CPU time of this process (not wall time, which
    # a loaded machine stretches): a quadratic scan of these texts would take hours.
    for text in ('"' + '\\"' * 200_000, "[" * 500_000 + "]" * 500_000,
                 "[" + "[]," * 300_000 + "[]]"):
        started = time.process_time()
        try:
            loads(text)
        except JSONRejected:
            pass
        assert time.process_time() - started < 5.0
    assert sys.getrecursionlimit() > MAX_DEPTH * 4


@hsettings(max_examples=300, deadline=None)
@given(value=json_values)
def test_round_trips_every_clean_value(value):
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
        assert loads(text) == value
        assert loads(text.encode("utf-8")) == value


@hsettings(max_examples=500, deadline=None)
@example(text="1E309:")  # a value fault, then a syntax error (found by this test)
@example(text='[NaN, {"a": 1e400,]')
@given(text=st.one_of(st.text(max_size=60),
                      st.text(alphabet='[]{}",:\\u0123456789dDeE.-+ntrfalsNIy', max_size=80),
                      st.binary(max_size=60)))
def test_anything_is_either_encodable_or_refused(text):
    try:
        value = loads(text)
    except JSONRejected as err:
        assert err.reason and isinstance(err.reason, str)
        return
    encode_like_a_frame(value)  # never raises for an accepted value


def test_a_value_fault_followed_by_a_syntax_error_is_a_syntax_error():
    for text in ("1E309:", '[NaN, }', '{"a": 1e400, "a": 1,'):
        with pytest.raises(JSONRejected, match="not valid JSON") as caught:
            loads(text)
        assert caught.value.document is None
