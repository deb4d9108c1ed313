"""A stand-in for the DynamoDB registry's one fan-out read, for benchmarks only.

moto's server needs ~9 s of Python to answer a Query of 10,000 index items on a shared core and
~90 s to be filled: it would measure moto, not the push engine. This server answers every
DynamoDB ``Query`` (``X-Amz-Target: DynamoDB_20120810.Query``) with the same page of
``--items`` subscriber ids (``{"connection_id": {"S": "fan-00000="}}``, ...; about 300 KB,
one page, as DynamoDB returns it under its 1 MB page limit) after ``--latency`` seconds. The
client side — boto3's request, JSON parsing and item unmarshalling in
``chalicelib.registry.connections`` — runs in the process under test, as in Lambda.

    python -m bench.registry_server --items 10000   # prints the endpoint URL; stops when
                                                    # stdin closes
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler

from devtools.loopback import LoopbackHTTPServer


def subscriber_id(index: int) -> str:
    """The connection id of subscriber number ``index``."""
    return f"fan-{index:05d}="


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    args = parser.parse_args(argv)
    items = [{"connection_id": {"S": subscriber_id(i)}} for i in range(args.items)]
    page = json.dumps({"Items": items, "Count": len(items),
                       "ScannedCount": len(items)}).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 (http.server API)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            target = self.headers.get("X-Amz-Target", "")
            if args.latency:
                time.sleep(args.latency)
            body = page if target.endswith(".Query") else json.dumps(
                {"__type": "com.amazon.coral.validate#ValidationException",
                 "message": f"{target} is not served here"}).encode()
            self.send_response(200 if target.endswith(".Query") else 400)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet
            pass

    server = LoopbackHTTPServer(Handler).start()
    print(f"http://127.0.0.1:{server.port}", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
