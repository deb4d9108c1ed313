"""A fast stand-in for API Gateway's management API, for benchmarks only (one asyncio loop).

``tests.support.management_api`` (http.server, a thread per connection) spends ~0.25 ms of CPU
per post: at 10,000 posts it, not the client under test, would set the pace. This server
answers ``POST /{stage}/@connections/{id}`` with 200 and API Gateway's usual headers after
``--latency`` seconds, keeps connections alive, and parses only what it needs (request line,
``Content-Length``). It checks nothing (no signature, no 410): correctness is the unit tests'
job, against the real ``http.server`` one.

Run as a separate process (the benchmark pins it to another core)::

    python -m bench.management_server --latency 0.02   # prints the endpoint URL; stops when
                                                      # stdin closes
    python -m bench.management_server --cert c.pem --key k.pem   # the same over TLS (https://)
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from email.utils import formatdate

ANSWER = ("HTTP/1.1 200 OK\r\n"
          "Date: {date}\r\n"
          "Content-Type: application/json\r\n"
          "Content-Length: 0\r\n"
          "Connection: keep-alive\r\n"
          "x-amzn-RequestId: 6d8a7f4e-2b1c-4c52-9d0e-{n:012d}\r\n"
          "x-amz-apigw-id: Q1w2E3r4T5y6U7i=\r\n"
          "\r\n")


class ManagementProtocol(asyncio.Protocol):
    """One client connection: requests are answered in order, each after the latency."""

    latency = 0.0
    answered = 0

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buffer = b""
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            if self.latency:
                self.loop.call_later(self.latency, self._answer)
            else:
                self._answer()

    def _answer(self) -> None:
        if self.transport.is_closing():
            return
        ManagementProtocol.answered += 1
        self.transport.write(ANSWER.format(date=formatdate(usegmt=True),
                                           n=ManagementProtocol.answered).encode())


async def _serve(latency: float, stage: str, tls=None) -> None:
    ManagementProtocol.latency = latency
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ManagementProtocol, "127.0.0.1", 0, backlog=1024,
                                      ssl=tls)
    port = server.sockets[0].getsockname()[1]
    print(f"{'https' if tls else 'http'}://127.0.0.1:{port}/{stage}", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    server.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--stage", default="bench")
    parser.add_argument("--cert", help="PEM certificate: serve https (with --key)")
    parser.add_argument("--key", help="PEM private key of --cert")
    args = parser.parse_args(argv)
    tls = None
    if args.cert:
        import ssl

        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # TLS 1.2 and 1.3, as API Gateway
        tls.load_cert_chain(args.cert, args.key)
    asyncio.run(_serve(args.latency, args.stage, tls))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
