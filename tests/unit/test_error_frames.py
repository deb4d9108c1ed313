"""Error frames always fit a WebSocket message, whatever input they repeat (issue 19 defect 3):
API Gateway drops a message over 128 KB, so an error frame over it would be silence."""
import json

from hypothesis import given, settings as hsettings, strategies as st

from chalicelib import errors
from chalicelib.delivery import post
from chalicelib.protocol import pusher

#: any text a hostile client could send: every code point JSON text can carry (no lone
#: surrogates: the strict reader refuses them), long or short
TEXT = st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=300),
                 st.builds(lambda c, n: c * n,
                           st.characters(exclude_categories=("Cs",)),
                           st.integers(0, 140_000)))
#: an error frame stays a few KB: 1,024 characters of message and channel, each at most 4
#: bytes of UTF-8 or 12 of a doubly escaped control character
BOUND = 32 * 1024


@hsettings(max_examples=200, deadline=None)
@given(channel=TEXT, message=TEXT, status=st.integers(100, 599))
def test_subscription_errors_fit_and_repeat_what_fits(channel, message, status):
    text = pusher.subscription_error(channel, status, message, "InvalidChannel")
    assert len(post.encode_frame(text)) <= BOUND
    frame = json.loads(text)
    data = json.loads(frame["data"])
    assert data["status"] == status and data["type"] == "InvalidChannel"
    for given_text, echoed in ((channel, frame["channel"]), (message, data["error"])):
        if len(given_text) <= errors.MAX_ECHO_CHARS:
            assert echoed == given_text
        else:
            assert echoed == given_text[:errors.MAX_ECHO_CHARS - 1] + "…"


@hsettings(max_examples=200, deadline=None)
@given(message=TEXT, code=st.one_of(st.none(), st.integers(4000, 4399)))
def test_pusher_errors_fit(message, code):
    text = pusher.error(message, code)
    assert len(post.encode_frame(text)) <= BOUND
    data = json.loads(json.loads(text)["data"])
    assert data["code"] == code
    assert data["message"] == errors.clip(message)


@hsettings(max_examples=200, deadline=None)
@given(message=TEXT)
def test_native_error_frames_and_bodies_fit(message):
    err = errors.BadRequest(message or "x")
    frame = {**err.frame(), "id": "i" * 64, "action": "subscribe"}
    assert len(post.encode_frame(frame)) <= BOUND
    assert frame["message"] == errors.clip(message or "x")
    assert len(json.dumps(err.body())) <= BOUND


def test_clip():
    assert errors.clip("abc", 3) == "abc"
    assert errors.clip("abcd", 3) == "ab…"
    assert len(errors.clip("x" * 131_000)) == errors.MAX_ECHO_CHARS
