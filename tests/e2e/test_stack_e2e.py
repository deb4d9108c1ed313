"""End to end through the running local stack (devtools.stack on free ports): the dev issuer,
moto (DynamoDB + SQS), soketi, ``chalice local`` and the local WebSocket gateway.

50 real WebSocket clients (25 users, two connections each, one of them in a presence room)
connect with their tokens and subscribe; pushes made through ``POST /notifications``, through
the SQS push queue (the stack feeds it to ``push_worker`` as Lambda's event source mapping
would) and through the WebSocket ``publish`` action (a client event) must each reach every
intended client exactly once and no other client.
Closing the clients removes every registry item they made (the stack is shared: the check is
scoped to this test's connections, users and channels).
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import fields
from urllib.parse import quote

import boto3
import pytest
import requests
from websockets.asyncio.client import connect

from devtools.stack import ROOT, Ports, Stack, StackError, load_config, stage_env

pytestmark = pytest.mark.e2e

USERS = 25
CONNECTIONS_PER_USER = 2
QUIET_SECONDS = 0.7            # after the expected frames, wait this long for strays


@pytest.fixture(scope="module")
def stack(local_stack):
    """The session's shared local stack (tests/conftest.py)."""
    return local_stack


def aws(stack, service):
    return boto3.session.Session().client(
        service, endpoint_url=stack.dynamodb_url, region_name="us-east-1",
        aws_access_key_id="local", aws_secret_access_key="local")


def registry_items(stack, run: str, connection_ids=frozenset()) -> list:
    """The registry's items of one test (the stack is shared): those of its connections, and
    any naming its run id (its users, channels, presence members). The event history of its
    channels and users stays by design: each such item must expire within the history window
    (its head within a week)."""
    table = stack.env["CONNECTIONS_TABLE"]
    pages = aws(stack, "dynamodb").get_paginator("scan").paginate(TableName=table)
    items = [item for page in pages for item in page["Items"]
             if item["connection_id"]["S"] in connection_ids
             or any(run in value.get("S", "") for value in item.values())]
    now = time.time()
    for item in items:
        if item["connection_id"]["S"].startswith("history#"):
            limit = 7 * 24 * 3600 if item["sk"]["S"] == "head" else 120
            assert int(item["expires_at"]["N"]) <= now + limit + 5, item
    return [item for item in items if not item["connection_id"]["S"].startswith("history#")]


class Client:
    """One WebSocket client: its user, whether it is in ``room`` (every even-numbered client
    is), every event frame it got."""

    def __init__(self, index: int, user: str, token: str, room: str):
        self.index, self.user, self.token, self.room = index, user, token, room
        self.in_room = index % 2 == 0
        self.events: list = []
        self.replies: list = []
        self.ws = None
        self.reader = None

    async def open(self, url: str) -> None:
        self.ws = await connect(f"{url}?token={quote(self.token)}", open_timeout=30)
        self.reader = asyncio.create_task(self._read())
        channels = [f"private-user-{self.user}"] + ([self.room] if self.in_room else [])
        for channel in channels:
            await self.ws.send(json.dumps({"action": "subscribe", "channel": channel}))

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            (self.events if frame.get("type") == "event" else self.replies).append(frame)

    def subscribed(self) -> int:
        return sum(1 for r in self.replies if r.get("type") == "subscribed")

    def received(self) -> Counter:
        return Counter(frame["event"] for frame in self.events)


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_many_clients_get_each_push_exactly_once_and_closing_removes_their_items(stack):
    run = uuid.uuid4().hex[:8]
    room = f"presence-e2e-{run}"
    users = [f"e2e-{run}-{i}" for i in range(USERS)]
    tokens = {user: stack.mint(user, name=user) for user in users}
    sender_token = stack.mint(f"e2e-{run}-service", scope="notifications:send")
    clients = [Client(i, users[i % USERS], tokens[users[i % USERS]], room)
               for i in range(USERS * CONNECTIONS_PER_USER)]
    connection_ids: set = set()
    expected = {c.index: Counter() for c in clients}

    def expect(event: str, who) -> None:
        for client in clients:
            if who(client):
                expected[client.index][event] += 1

    async def scenario() -> None:
        limit = asyncio.Semaphore(40)

        async def open_client(client):
            async with limit:
                await client.open(stack.websocket_url)

        await asyncio.gather(*(open_client(c) for c in clients))
        await wait_until(lambda: all(c.subscribed() == (2 if c.in_room else 1) for c in clients),
                         60, "every subscription to be confirmed")
        connection_ids.update(item["connection_id"]["S"] for item in registry_items(stack, run)
                              if item["sk"]["S"] == "connection")
        assert len(connection_ids) == len(clients)

        loop = asyncio.get_running_loop()
        http = requests.Session()

        def post(body, token):
            response = http.post(f"{stack.http_url}/notifications", json=body, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
            return response.json()

        # 1. POST /notifications to oneself: both connections of that user
        target = users[7]
        summary = await loop.run_in_executor(
            None, post, {"user_id": target, "event": "notify-user", "data": {"n": 1}},
            tokens[target])
        assert summary["delivered"] == CONNECTIONS_PER_USER
        expect("notify-user", lambda c: c.user == target)

        # 2. POST /notifications to a channel (needs the notifications:send scope)
        summary = await loop.run_in_executor(
            None, post, {"channel": room, "event": "notify-room", "data": {"n": 2}},
            sender_token)
        assert summary["delivered"] == sum(c.in_room for c in clients)
        expect("notify-room", lambda c: c.in_room)

        # 3. the SQS push queue: to a user, and to a single connection
        sqs = aws(stack, "sqs")
        queue_url = sqs.get_queue_url(QueueName=stack.env["PUSH_QUEUE_NAME"])["QueueUrl"]
        sqs_user = users[17]
        connection_target = clients[3]
        connection_id = await _connection_id_of(connection_target, stack)
        for body in ({"user_id": sqs_user, "event": "sqs-user", "data": {"n": 3}},
                     {"connection_id": connection_id, "event": "sqs-connection",
                      "data": {"n": 4}}):
            sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(body))
        expect("sqs-user", lambda c: c.user == sqs_user)
        expect("sqs-connection", lambda c: c is connection_target)

        # 4. a client event from a client to the room: every other subscriber (Pusher's model:
        #    never echoed to the sender), with the sender's user id on a presence channel
        publisher = clients[10]
        await publisher.ws.send(json.dumps({"action": "publish", "channel": room,
                                            "event": "client-published", "data": {"n": 5}}))
        expect("client-published", lambda c: c.in_room and c is not publisher)

        total = sum(sum(e.values()) for e in expected.values())
        await wait_until(lambda: sum(len(c.events) for c in clients) >= total, 60,
                         f"{total} event frames")
        await asyncio.sleep(QUIET_SECONDS)  # duplicates or strays would arrive now
        wrong = {c.index: (dict(c.received()), dict(expected[c.index]))
                 for c in clients if c.received() != expected[c.index]}
        assert not wrong, f"clients with wrong deliveries (got, expected): {wrong}"
        assert any(r.get("type") == "published" for r in publisher.replies)
        assert {f.get("user_id") for c in clients for f in c.events
                if f["event"] == "client-published"} == {publisher.user}

        await asyncio.gather(*(c.ws.close() for c in clients))
        await asyncio.gather(*(c.reader for c in clients))

    asyncio.run(scenario())
    deadline = time.monotonic() + 30
    while registry_items(stack, run, connection_ids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert registry_items(stack, run, connection_ids) == []


async def _connection_id_of(client, stack) -> str:
    """Find a client's connection id the way a user would: the management API knows every
    connection, the registry knows whose it is."""
    table = stack.env["CONNECTIONS_TABLE"]
    items = aws(stack, "dynamodb").scan(
        TableName=table, FilterExpression="user_id = :u",
        ExpressionAttributeValues={":u": {"S": client.user}})["Items"]
    ids = sorted({item["connection_id"]["S"] for item in items})
    assert len(ids) == CONNECTIONS_PER_USER
    # tell the two connections of this user apart: push a marker to each through boto3
    management = boto3.client("apigatewaymanagementapi", endpoint_url=stack.management_url,
                              region_name="us-east-1", aws_access_key_id="local",
                              aws_secret_access_key="local")
    for connection_id in ids:
        marker = {"type": "marker", "connection_id": connection_id}
        management.post_to_connection(ConnectionId=connection_id,
                                      Data=json.dumps(marker).encode())
    await wait_until(lambda: any(r.get("type") == "marker" for r in client.replies), 10,
                     "the marker frame")
    return next(r["connection_id"] for r in client.replies if r.get("type") == "marker")


def test_a_bad_token_is_refused_at_the_handshake(stack):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect as sync_connect

    with pytest.raises(InvalidStatus) as info:
        with sync_connect(f"{stack.websocket_url}?token=not-a-jwt", open_timeout=10):
            pass
    assert info.value.response.status_code == 401


def test_default_ports_are_exactly_the_dev_stage_settings():
    """``make run`` uses .chalice/config.json unchanged: its dev stage has the stack's ports."""
    config = load_config()
    assert stage_env(Ports(), config) == config["stages"]["dev"]["environment_variables"]


def test_a_second_stack_on_the_same_run_directory_fails_with_a_clear_message(stack):
    result = subprocess.run(
        [sys.executable, "-m", "devtools.stack", "--ports-free", "--run-dir",
         str(stack.run_dir)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "another local stack is already running" in result.stderr
    assert f"pid {os.getpid()}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_taken_port_fails_with_a_clear_message(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        ports = Ports.free()
        ports = Ports(**{**{f.name: getattr(ports, f.name) for f in fields(ports)},
                         "http": holder.getsockname()[1]})
        with pytest.raises(StackError) as info:
            Stack(ports, run_dir=tmp_path, out=lambda line: None).start()
    assert f"{ports.http} (http)" in str(info.value)


def test_sigterm_stops_every_part_and_frees_every_port(tmp_path):
    """`make run` then SIGTERM (Ctrl-C takes the same path): no process left, no port held."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "devtools.stack", "--ports-free", "--run-dir",
         str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, children = [], []
    try:
        for line in proc.stdout:  # bounded: the stack gives up after its start timeout
            lines.append(line)
            if "export TOKEN=" in line:
                break
        banner = "".join(lines)
        assert "local stack ready" in banner, banner[-3000:]
        ports = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", banner)}
        assert len(ports) >= 7  # page, HTTP, WebSocket, management, soketi, moto, issuer
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        assert len(children) == 5, children  # issuer, dynamodb, soketi, http, gateway
        proc.send_signal(signal.SIGTERM)
        proc.stdout.read()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    for pid in children:
        assert not os.path.exists(f"/proc/{pid}"), f"process {pid} outlived the stack"
    for port in ports:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"


def test_the_command_line_client_prints_what_arrives(stack):
    sub = f"auth0|cli-{uuid.uuid4().hex[:8]}"  # an Auth0 subject: its user id escapes the "|"
    user_id = sub.replace("|", "=7C")
    token = stack.mint(sub)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.client", "--url", stack.websocket_url, "--token", token,
         "--count", "1", "--timeout", "20"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # the subscription reply (bounded by --timeout)
        response = requests.post(f"{stack.http_url}/notifications", timeout=30,
                                 json={"user_id": user_id, "event": "cli-hello", "data": [1]},
                                 headers={"Authorization": f"Bearer {token}"})
        assert response.json()["delivered"] == 1
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = first + out
    frames = [json.loads(line) for line in out.splitlines()]
    assert frames[0] == {"type": "subscribed", "channel": f"private-user-{user_id}",
                         "id": f"sub-private-user-{user_id}"}
    assert frames[1] == {"type": "event", "event": "cli-hello", "data": [1], "id": 1}
    assert proc.returncode == 0
    assert token not in out + err


def test_the_printed_pusher_js_configuration_works_against_our_websocket_api(stack):
    """What `make run` prints for pusher-js, pasted into a Node program as it is: it connects
    to the local gateway (no soketi) and gets a private channel signed by our /pusher/auth."""
    sub = f"auth0|pjs-{uuid.uuid4().hex[:8]}"
    token = stack.mint(sub)
    config = stack.pusher_js_config()
    assert all(f"  {line}" in stack.banner(token) for line in config.splitlines())
    channel = "private-user-" + sub.replace("|", "=7C")
    script = "\n".join([
        "const Pusher = require('pusher-js');",
        "const TOKEN = process.env.TOKEN;",
        config,
        f"const channel = pusher.subscribe('{channel}');",
        "channel.bind('pusher:subscription_succeeded', () => {",
        "  console.log('subscribed ' + pusher.connection.socket_id);",
        "  pusher.disconnect(); setTimeout(() => process.exit(0), 100); });",
        "channel.bind('pusher:subscription_error', (e) => {",
        "  console.log('refused ' + JSON.stringify(e)); process.exit(1); });",
        "setTimeout(() => { console.log('timeout ' + pusher.connection.state); process.exit(2); },"
        " 20000);",
    ])
    node_dir = ROOT / "devtools" / "node"
    result = subprocess.run(["node", "-e", script], cwd=node_dir, capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "TOKEN": token,
                                 "NODE_PATH": str(node_dir / "node_modules")})
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.fullmatch(r"subscribed \d+\.\d+\n", result.stdout)
