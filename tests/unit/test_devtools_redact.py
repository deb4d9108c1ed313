"""The local stack's log filter (devtools/chalice_local.py, issue 19 defect 6): query values
that are secrets never reach a console line; the rest of the line stays readable."""
import pytest

from devtools.chalice_local import redact


@pytest.mark.parametrize("line, kept, gone", [
    ('"GET /apps/1/channels?auth_key=app-key&auth_signature=5f3a9c&auth_version=1.0 HTTP/1.1"'
     ' 200 -', ["auth_key=app-key", "auth_version=1.0", "auth_signature=<redacted>"],
     ["5f3a9c"]),
    ('"GET /pusher/auth?callback=cb&socket_id=1.2&token=eyJh.eyJz.c2ln HTTP/1.1" 200 -',
     ["callback=cb", "socket_id=1.2", "token=<redacted>"], ["eyJh"]),
    ("code 400, message Bad request syntax ('GET /x?Auth=eyJh.eyJz.c2ln')", ["Auth=<redacted>"],
     ["eyJh"]),
    ('"GET /dev?AUTHORIZATION=Bearer%20eyJh.x.y&x_token=visible HTTP/1.1"',
     ["x_token=visible"], ["eyJh"]),
    ('"GET /apps/1/channels/c;x?info=user_count HTTP/1.1" 200 -', ["c;x?info=user_count"], []),
])
def test_redact(line, kept, gone):
    text = redact(line)
    assert all(part in text for part in kept), text
    assert not any(part in text for part in gone), text
