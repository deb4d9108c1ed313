"""One deployment for the whole deploy suite: ``make package STAGE=dev``'s output on a ministack
started on a free loopback port, a dev issuer the stage trusts, and the stage's custom domains as
loopback relays (tests/deploy/relay.py). Everything stops at the end of the session, ministack
with its process group."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Dict

import pytest

from devtools.dev_issuer import DevIssuer
from tests.deploy import relay
from tests.deploy.ministack import Deployed, Ministack, package, stage_settings

STAGE = "dev"


@dataclass
class Deployment:
    """The deployed dev stage, as its users reach it.

    Attributes:
        ministack: the emulator.
        stack: the created stack (outputs, what the harness changed).
        issuer: the dev issuer the stage trusts (``issuer.mint(sub)``).
        ws: the WebSocket domain (``ws://127.0.0.1:<ws.port>/app/<key>``).
        http: the REST domain (``http://127.0.0.1:<http.port>/apps/…``).
        env: the stage's environment variables (``PUSHER_KEY``...), from the template.
    """

    ministack: Ministack
    stack: Deployed
    issuer: DevIssuer
    ws: relay.WebSocketRelay
    http: relay.HttpRelay
    env: Dict[str, str]

    @property
    def rest_url(self) -> str:
        """The REST API's ``execute-api`` URL (emulator path form), no trailing slash."""
        return self.ministack.execute_api(self.stack.outputs["RestAPIId"], STAGE)

    @property
    def websocket_url(self) -> str:
        """The WebSocket API's ``execute-api`` URL (emulator path form)."""
        return self.ministack.execute_api(self.stack.outputs["WebsocketAPIId"], STAGE, "ws")

    @property
    def domain_http_url(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"


@pytest.fixture(scope="session")
def deployment(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ministack")
    issuer = DevIssuer(keys_dir=workdir / "keys", port=0).start()
    emulator = Ministack(workdir / "emulator")
    ws = http = None
    try:
        build = package(STAGE, sys.executable)
        emulator.start()
        stack = emulator.deploy(build, STAGE, stage_settings(issuer.issuer, issuer.audience))
        ws, http = relay.relays(emulator.port, stack.outputs["WebsocketAPIId"],
                                stack.outputs["RestAPIId"], STAGE)
        template = json.loads((build / "sam.json").read_text())
        env = {name: value for name, value in
               template["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"].items()
               if isinstance(value, str)}
        yield Deployment(emulator, stack, issuer, ws, http, env)
    finally:
        for server in (ws, http):
            if server is not None:
                server.stop()
        emulator.stop()
        issuer.stop()
