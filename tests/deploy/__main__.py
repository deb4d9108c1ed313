"""``make try-deploy STAGE=dev``: the deploy suite's deployment, to keep and try by hand.

Packages the stage (``make package``), starts ministack on 127.0.0.1:4566 and the dev issuer on
127.0.0.1:9999 (the keys of ``make token``), deploys through ministack's CloudFormation (the
emulator's gaps worked around by tests/deploy/ministack_gaps.py), starts the stage's custom
domains on loopback (tests/deploy/relay.py), prints where everything is and the pusher-js
options, and serves until Ctrl-C.

    python -m tests.deploy [--stage dev] [--port 4566] [--ws-port 4510] [--http-port 4511]
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
from pathlib import Path

from devtools.dev_issuer import DEFAULT_PORT, DevIssuer
from tests.deploy import relay
from tests.deploy.ministack import Ministack, package, stage_settings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.deploy", description=__doc__.split("\n")[0])
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--port", type=int, default=4566, help="ministack's port")
    parser.add_argument("--issuer-port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--ws-port", type=int, default=4510, help="the WebSocket domain")
    parser.add_argument("--http-port", type=int, default=4511, help="the REST domain")
    args = parser.parse_args(argv)

    print(f"make package STAGE={args.stage} ...", flush=True)
    build = package(args.stage, sys.executable)
    issuer = DevIssuer(port=args.issuer_port).start()
    emulator = Ministack(Path(tempfile.mkdtemp(prefix="realtime-ministack-")), args.port)
    servers = []
    try:
        emulator.start()
        stack = emulator.deploy(build, args.stage,
                                stage_settings(issuer.issuer, issuer.audience))
        servers = list(relay.relays(emulator.port, stack.outputs["WebsocketAPIId"],
                                    stack.outputs["RestAPIId"], args.stage,
                                    args.ws_port, args.http_port))
        ws, http = servers
        variables = json.loads((build / "sam.json").read_text())["Resources"]["APIHandler"][
            "Properties"]["Environment"]["Variables"]
        key, app_id = variables.get("PUSHER_KEY"), variables.get("PUSHER_APP_ID")
        rest = emulator.execute_api(stack.outputs["RestAPIId"], args.stage)
        print(f"""
stack {stack.stack_name} created on ministack ({emulator.endpoint}; log {emulator.log_path})
worked around for the emulator (tests/deploy/ministack_gaps.py):
  {(chr(10) + '  ').join(stack.changes)}

REST API       {rest}   (GET /me, POST /pusher/auth, ...)
WebSocket API  {emulator.execute_api(stack.outputs['WebsocketAPIId'], args.stage, 'ws')}?token=<JWT>
domains        ws://127.0.0.1:{ws.port}/app/{key}  and  http://127.0.0.1:{http.port}/apps/{app_id}/...
tokens         make token SUB=alice   (dev issuer {issuer.issuer})

pusher-js:
  new Pusher('{key}', {{ cluster: 'mt1', wsHost: '127.0.0.1', wsPort: {ws.port}, forceTLS: false,
    enabledTransports: ['ws'], disableStats: true,
    channelAuthorization: {{ endpoint: 'http://127.0.0.1:{http.port}/pusher/auth',
                            headers: {{ Authorization: 'Bearer ' + token }} }},
    userAuthentication: {{ endpoint: 'http://127.0.0.1:{http.port}/pusher/user-auth',
                          headers: {{ Authorization: 'Bearer ' + token }} }} }});
Python pusher library:
  pusher.Pusher(app_id='{app_id}', key='{key}', secret=<PUSHER_SECRET>, host='127.0.0.1', port={http.port}, ssl=False)

Ctrl-C stops ministack, the relays and the issuer.""", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(1.0):
                if emulator.process is None or emulator.process.poll() is not None:
                    print("ministack exited:", emulator.log_tail(), file=sys.stderr)
                    return 1
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        for server in servers:
            server.stop()
        emulator.stop()
        issuer.stop()


if __name__ == "__main__":
    sys.exit(main())
