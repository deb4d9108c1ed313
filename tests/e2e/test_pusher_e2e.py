"""Pusher Channels end to end: real soketi, real `chalice local`, real pusher-js clients.

* soketi 1.6.1 (devtools/soketi) with a temporary copy of soketi.json whose every socket (the
  WebSocket/HTTP port, the metrics port, the UDP cluster-discovery port) is a free port on
  127.0.0.1, user authentication on, and webhooks pointed at the app;
* ``chalice local --no-autoreload --stage test`` (a stage absent from config.json, so the
  environment given here is the one the app sees) serving app.py;
* pusher-js 8.x on Node (tests/e2e/pusher/client.js) and its web build inside jsdom
  (tests/e2e/pusher/jsonp.js), with tokens from the dev issuer;
* the Python ``pusher`` library, pointed at soketi, for server-side triggers.

Every process runs under ``timeout`` in its own process group and is killed with its group.
"""
from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "devtools" / "node"
SOKETI_DIR = ROOT / "devtools" / "soketi"
SCRIPTS = Path(__file__).resolve().parent / "pusher"
CHALICE = ROOT / ".venv" / "bin" / "chalice"

APP_ID, KEY, SECRET = "424242", "e2e-key", "e2e-secret"
MASTER_KEY_B64 = base64.b64encode(bytes(range(100, 132))).decode()
PROCESS_TIMEOUT = "240"   # seconds: the outer bound of every server process
CLIENT_TIMEOUT = "60"     # seconds: the outer bound of every Node client

NODE = shutil.which("node")
REQUIRED = (NODE_DIR / "node_modules" / "pusher-js", NODE_DIR / "node_modules" / "pusher-js-auth",
            NODE_DIR / "node_modules" / "jsdom", SOKETI_DIR / "node_modules" / ".bin" / "soketi",
            CHALICE)
missing = [str(p) for p in REQUIRED if not p.exists()]
if NODE is None or missing:
    pytest.skip(f"e2e prerequisites missing (run `make node venv`): {missing or 'node'}",
                allow_module_level=True)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 right now (TCP or UDP)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env() -> Dict[str, str]:
    """A minimal environment: nothing of the caller's PUSHER_/SOKETI_/JWT_ settings leaks in."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    return {name: os.environ[name] for name in keep if name in os.environ}


class Server:
    """A long-running subprocess in its own process group, output to a log file."""

    def __init__(self, name: str, args: List[str], cwd: Path, env: Dict[str, str], log: Path):
        self.name, self.log = name, log
        self._log_file = open(log, "wb")
        self.proc = subprocess.Popen(["timeout", "-k", "5", PROCESS_TIMEOUT, *args], cwd=cwd,
                                     env=env, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_http(self, url: str, accept=(200, 204), deadline_s: float = 30.0) -> None:
        """Poll ``url`` until it answers one of ``accept`` (bounded)."""
        deadline = time.monotonic() + deadline_s
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n"
                                   f"{self.output()[-3000:]}")
            try:
                method = "OPTIONS" if "pusher" in url else "GET"
                request = urllib.request.Request(url, method=method)
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status in accept:
                        return
                    last = response.status
            except OSError as exc:
                last = exc
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready at {url} ({last}):\n{self.output()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=8)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        self._log_file.close()


class NodeClient:
    """One Node scenario; its JSON stdout lines are read on a thread into a queue."""

    def __init__(self, script: str, scenario: Optional[str], env: Dict[str, str]):
        args = ["timeout", "-k", "3", CLIENT_TIMEOUT, NODE, str(SCRIPTS / script)]
        if scenario:
            args.append(scenario)
        self.proc = subprocess.Popen(args, cwd=NODE_DIR, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     start_new_session=True, text=True)
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.seen: List[dict] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, step: str, within: float = 20.0) -> dict:
        """The first line whose ``step`` is ``step``; fails on timeout or early exit."""
        deadline = time.monotonic() + within
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                break
            try:
                message = json.loads(line)
            except ValueError:
                continue
            self.seen.append(message)
            if message.get("step") == step:
                return message
        self.stop()
        raise AssertionError(f"no {step!r} from the client; saw {self.seen}; "
                             f"stderr: {self.proc.stderr.read()[-2000:]}")

    def drain(self, within: float = 5.0) -> List[dict]:
        """Every line seen so far plus the rest of the output (after the client exited)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            try:
                self.seen.append(json.loads(line))
            except ValueError:
                continue
        return list(self.seen)

    def wait(self, within: float = 10.0) -> int:
        try:
            return self.proc.wait(timeout=within)
        finally:
            self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, dev_issuer):
    """soketi + chalice local, wired to each other; yields a dict of endpoints and helpers."""
    work = tmp_path_factory.mktemp("pusher-e2e")
    chalice_port = free_port()
    webhook_url = f"http://127.0.0.1:{chalice_port}/pusher/webhooks"

    config = json.loads((SOKETI_DIR / "soketi.json").read_text())
    ws_port, metrics_port, cluster_port = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    config.update({
        "host": "127.0.0.1", "port": ws_port,
        "metrics.host": "127.0.0.1", "metrics.port": metrics_port,
        "cluster.address": "127.0.0.1", "cluster.hostname": "127.0.0.1",
        "cluster.port": cluster_port, "cluster.unicast": f"127.0.0.1:{cluster_port}",
        "cluster.prefix": f"e2e-{ws_port}",
    })
    config_path = work / "soketi.json"
    config_path.write_text(json.dumps(config))
    soketi_env = {
        **base_env(),
        "SOKETI_DEFAULT_APP_ID": APP_ID,
        "SOKETI_DEFAULT_APP_KEY": KEY,
        "SOKETI_DEFAULT_APP_SECRET": SECRET,
        "SOKETI_DEFAULT_APP_USER_AUTHENTICATION": "true",
        "SOKETI_SHUTDOWN_GRACE_PERIOD": "500",  # as devtools.stack: not 3 s at teardown
        "SOKETI_DEFAULT_APP_WEBHOOKS": json.dumps([{
            "url": webhook_url,
            "event_types": ["channel_occupied", "channel_vacated", "member_added",
                            "member_removed"]}]),
    }
    chalice_env = {
        **base_env(),
        "PYTHONUNBUFFERED": "1",
        "STAGE": "dev",
        **dev_issuer.env(),
        "CORS_ALLOW_ORIGIN": "*",
        "PUSHER_APP_ID": APP_ID, "PUSHER_KEY": KEY, "PUSHER_SECRET": SECRET,
        "PUSHER_CLUSTER": "mt1", "PUSHER_HOST": "127.0.0.1", "PUSHER_PORT": str(ws_port),
        "PUSHER_SSL": "false", "PUSHER_ENCRYPTION_MASTER_KEY_BASE64": MASTER_KEY_B64,
        "PUSHER_PRESENCE_USER_INFO_CLAIMS": "name",
    }
    servers: List[Server] = []
    try:
        chalice = Server("chalice local",
                         [str(CHALICE), "local", "--no-autoreload", "--host", "127.0.0.1",
                          "--port", str(chalice_port), "--stage", "test"],
                         ROOT, chalice_env, work / "chalice.log")
        servers.append(chalice)
        soketi = Server("soketi",
                        [NODE, str(SOKETI_DIR / "node_modules" / ".bin" / "soketi"), "start",
                         f"--config={config_path}"],
                        SOKETI_DIR, soketi_env, work / "soketi.log")
        servers.append(soketi)
        soketi.wait_http(f"http://127.0.0.1:{ws_port}/")
        chalice.wait_http(f"http://127.0.0.1:{chalice_port}/pusher/auth")

        import pusher

        trigger_client = pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET,
                                       host="127.0.0.1", port=ws_port, ssl=False,
                                       encryption_master_key_base64=MASTER_KEY_B64)
        node_env = {
            **base_env(),
            "NODE_PATH": str(NODE_DIR / "node_modules"),
            "PUSHER_KEY": KEY, "WS_PORT": str(ws_port),
            "AUTH_BASE": f"http://127.0.0.1:{chalice_port}",
            "TOKEN_ALICE": dev_issuer.mint("alice", name="Alice"),
            "TOKEN_BOB": dev_issuer.mint("bob", name="Bob"),
        }
        yield {"chalice": chalice, "soketi": soketi, "pusher": trigger_client,
               "node_env": node_env, "ports": (ws_port, metrics_port, cluster_port, chalice_port)}
    finally:
        for server in reversed(servers):
            server.stop()


def run(stack, script: str, scenario: Optional[str] = None, **extra_env) -> NodeClient:
    return NodeClient(script, scenario, {**stack["node_env"], **extra_env})


def wait_for_log(server: Server, text: str, within: float = 10.0) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        output = server.output()
        if text in output:
            return output
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {server.name} output:\n{server.output()[-3000:]}")


# --- the tests ----------------------------------------------------------------------------------

def test_soketi_binds_loopback_only(stack):
    """Every socket of our soketi (WebSocket/HTTP, metrics, UDP discovery) is on 127.0.0.1."""
    ws_port, metrics_port, cluster_port, chalice_port = stack["ports"]
    out = subprocess.run(["ss", "-H", "-tulnp"], capture_output=True, text=True, timeout=10)
    if out.returncode != 0:
        pytest.skip("ss unavailable")
    ours = [line for line in out.stdout.splitlines()
            if any(f":{port} " in line for port in (ws_port, metrics_port, cluster_port))]
    assert ours, out.stdout
    assert {line.split()[0] for line in ours} == {"tcp", "udp"}
    for line in ours:
        local = line.split()[4]
        assert local.startswith("127.0.0.1:"), line


def test_private_channel_and_python_trigger(stack):
    client = run(stack, "client.js", "private")
    client.expect("ready")
    stack["pusher"].trigger("private-user-alice", "greet", {"hello": "alice", "n": 1})
    received = client.expect("received")
    assert received["data"] == {"hello": "alice", "n": 1}
    assert client.wait() == 0


def test_presence_members_and_webhooks(stack):
    client = run(stack, "client.js", "presence", PRESENCE_ROOM="presence-lobby")
    alice = client.expect("alice_subscribed")
    assert alice["me"] == {"id": "alice", "info": {"name": "Alice"}}
    assert client.wait(within=20) == 0
    steps = {message["step"]: message for message in client.drain()}
    bob = steps["bob_subscribed"]
    assert bob["me"] == {"id": "bob", "info": {"name": "Bob"}}
    assert bob["count"] == 2
    assert bob["members"] == [{"id": "alice", "info": {"name": "Alice"}},
                              {"id": "bob", "info": {"name": "Bob"}}]
    assert steps["alice_saw_member_added"] == {
        "step": "alice_saw_member_added", "id": "bob", "info": {"name": "Bob"}}
    # soketi's signed webhooks reached /pusher/webhooks, passed validation and were dispatched
    chalice = stack["chalice"]
    wait_for_log(chalice, "webhook channel_occupied channel=presence-lobby")
    wait_for_log(chalice, "webhook member_added channel=presence-lobby user_id=bob")
    output = wait_for_log(chalice, "webhook member_removed channel=presence-lobby")
    assert "POST /pusher/webhooks HTTP/1.1\" 200" in output
    assert "pusher.webhooks: unauthorized" not in output


def test_private_encrypted_payload_is_decrypted_by_the_client(stack):
    client = run(stack, "client.js", "encrypted")
    client.expect("ready")
    secret = {"text": "for alice only", "emoji": "🔒"}
    stack["pusher"].trigger("private-encrypted-user-alice", "secret", secret)
    assert client.expect("received")["data"] == secret
    assert client.wait() == 0


def test_signin_and_send_to_user(stack):
    client = run(stack, "client.js", "signin")
    ready = client.expect("ready")
    assert ready["user_data"] == {"id": "alice", "user_info": {"name": "Alice"}}
    stack["pusher"].send_to_user("alice", "greeting", {"hi": "alice"})
    assert client.expect("received")["data"] == {"hi": "alice"}
    assert client.wait() == 0


def test_denied_channel_gives_subscription_error_403(stack):
    client = run(stack, "client.js", "denied")
    error = client.expect("subscription_error")
    assert error["status"] == 403
    assert client.wait() == 0


def test_batch_authorization_with_pusher_js_auth(stack):
    chalice = stack["chalice"]
    before = chalice.output().count('"POST /pusher/auth HTTP/1.1"')
    client = run(stack, "client.js", "batch")
    result = client.expect("outcome")
    assert client.wait() == 0
    # pusher-js 8 reports a batch refusal without its status: only the type survives
    assert result["outcome"] == {"private-user-alice": "subscribed",
                                 "presence-batch": "subscribed",
                                 "private-user-bob": {"error": {"type": "AuthError"}}}
    # the three channels were judged in one HTTP request, each on its own
    assert chalice.output().count('"POST /pusher/auth HTTP/1.1"') - before == 1
    [request] = result["requests"]
    assert "&channel_name[0]=private-user-alice&channel_name[1]=presence-batch" \
           "&channel_name[2]=private-user-bob" in request["body"]
    assert request["status"] == 200
    answer = json.loads(request["response"])
    assert {name: entry["status"] for name, entry in answer.items()} == {
        "private-user-alice": 200, "presence-batch": 200, "private-user-bob": 403}


def test_jsonp_transport_in_jsdom(stack):
    client = run(stack, "jsonp.js")
    loaded = client.expect("loaded")
    assert loaded["websocket"] == "function"
    ready = client.expect("ready")
    assert ready["channel"] == "private-user-alice"
    stack["pusher"].trigger("private-user-alice", "greet", {"via": "jsonp"})
    assert client.expect("received")["data"] == {"via": "jsonp"}
    assert client.wait() == 0
    assert "GET /pusher/auth?callback=Pusher.auth_callbacks" in stack["chalice"].output()
