"""A command-line WebSocket client for the local stack (or a deployed stage).

Connects with a token, subscribes to ``private-user-{user id}`` (and any ``--channel``), then prints
every frame that arrives, one JSON document per line, until Ctrl-C::

    python -m devtools.client --token "$(make -s token SUB=alice)"
    python -m devtools.client --sub bob --channel presence-lobby      # mints a dev token
    python -m devtools.client --url wss://abc.execute-api.eu-west-1.amazonaws.com/prod --token ...

The token goes in the ``token`` query parameter (browsers cannot set headers on a WebSocket
handshake, and the app accepts both). It is never printed.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import List, Optional
from urllib.parse import urlencode

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from chalicelib.errors import AppError
from chalicelib.auth.principal import make_user_id

DEFAULT_URL = "ws://127.0.0.1:3001/dev"


def token_subject(token: str) -> str:
    """The ``sub`` claim of a compact JWS, read without verification (the server verifies).

    Raises:
        ValueError: the text is not a JWT with a string ``sub``.
    """
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as exc:
        raise ValueError("the token is not a JWT") from exc
    sub = claims.get("sub") if isinstance(claims, dict) else None
    if not isinstance(sub, str) or not sub:
        raise ValueError("the token has no sub claim")
    return sub


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.client",
                                     description="Connect, subscribe, print what arrives.")
    parser.add_argument("--url", default=os.environ.get("WEBSOCKET_URL", DEFAULT_URL))
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--token", default=os.environ.get("TOKEN"),
                     help="a JWT (default: $TOKEN)")
    who.add_argument("--sub", help="mint a token for SUB with the local dev issuer")
    parser.add_argument("--issuer-port", type=int, default=9999)
    parser.add_argument("--user-id-prefix", default=None,
                        help="the issuer's user_id_prefix in JWT_ISSUERS, if it has one (the "
                             "user id is then PREFIX.<escaped sub>; see docs/auth.md, User ids)")
    parser.add_argument("--channel", action="append", default=[],
                        help="another channel to subscribe to (repeatable)")
    parser.add_argument("--count", type=int, default=0,
                        help="exit after this many frames following the subscriptions "
                             "(0: run until Ctrl-C)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="exit with status 3 when nothing arrives for this many seconds")
    args = parser.parse_args(argv)

    token = args.token
    if args.sub:
        from devtools.dev_issuer import DevIssuer

        token = DevIssuer(port=args.issuer_port).mint(args.sub, name=args.sub.title())
    if not token:
        parser.error("give --token (or set TOKEN) or --sub")
    try:
        sub = token_subject(token)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        user_id = make_user_id(sub, args.user_id_prefix)
    except (ValueError, AppError) as exc:  # a bad prefix; a sub no user id can carry
        parser.error(str(exc))
    channels = [f"private-user-{user_id}", *args.channel]
    separator = "&" if "?" in args.url else "?"
    url = f"{args.url}{separator}{urlencode({'token': token})}"

    try:
        with connect(url, open_timeout=10, max_size=None) as ws:
            print(f"# connected to {args.url} as {sub}", file=sys.stderr, flush=True)
            for channel in channels:
                ws.send(json.dumps({"action": "subscribe", "channel": channel,
                                    "id": f"sub-{channel}"}))
            seen = 0
            while True:
                try:
                    frame = ws.recv(args.timeout)
                except TimeoutError:
                    print("# nothing arrived in time", file=sys.stderr)
                    return 3
                if isinstance(frame, bytes):
                    frame = base64.b64encode(frame).decode()
                print(frame, flush=True)
                seen += 1
                if args.count and seen >= len(channels) + args.count:
                    return 0
    except InvalidStatus as exc:
        print(f"# refused: HTTP {exc.response.status_code}", file=sys.stderr)
        return 2
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else 1006
        print(f"# closed ({code})", file=sys.stderr)
        return 0 if code in (1000, 1001) else 1
    except OSError as exc:
        print(f"# cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
