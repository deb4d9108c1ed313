"""Conformance of devtools.local_gateway with API Gateway WebSocket APIs.

A tiny Chalice app (below) records every event its handlers receive; real WebSocket clients
(``websockets``) connect to the gateway on free ports and boto3's ``apigatewaymanagementapi``
talks to its management API. Each test checks one behaviour a user of API Gateway sees.
"""
from __future__ import annotations

import json
import re
import threading
import time

import boto3
import pytest
from botocore.exceptions import ClientError
from chalice import Chalice
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from devtools.local_gateway import GatewayConfig, LocalWebSocketGateway, evaluate_policy

ID_RE = re.compile(r"^[A-Za-z0-9+/]{15}=$")
ARN_RE = re.compile(r"^arn:aws:execute-api:us-east-1:123456789012:localdev01/dev/\$connect$")

# --- the test app ---------------------------------------------------------------------------

app = Chalice(app_name="gateway-conformance")
app.experimental_feature_flags.update(["WEBSOCKETS"])
app.websocket_api.session = boto3.session.Session(
    aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")

EVENTS: list = []          # (route key as seen by the handler, event dict)
EVENTS_LOCK = threading.Lock()
RELEASE = threading.Event()  # lets the "block" message return


def _record(kind, event):
    with EVENTS_LOCK:
        EVENTS.append((kind, event))


def _token(event):
    query = event.get("queryStringParameters") or {}
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    return query.get("token") or headers.get("authorization")


def _policy(effect, arn):
    return {"Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": arn}]}


@app.lambda_function(name="ws_authorizer")
def ws_authorizer(event, context):
    _record("authorizer", event)
    token = _token(event)
    arn = event["methodArn"]
    if token == "good":
        return {"principalId": "user-1", "policyDocument": _policy("Allow", arn),
                "context": {"sub": "user-1", "n": 3, "flag": True}}
    if token == "wildcard":
        return {"principalId": "user-2",
                "policyDocument": _policy("Allow", arn.rsplit("/", 2)[0] + "/*"),
                "context": {}}
    if token == "deny":
        return {"principalId": "user-1", "policyDocument": _policy("Deny", arn)}
    if token == "boom":
        raise RuntimeError("authorizer bug")
    if token == "badctx":
        return {"principalId": "user-1", "policyDocument": _policy("Allow", arn),
                "context": {"nested": {"a": 1}}}
    raise Exception("Unauthorized")


@app.on_ws_connect()
def ws_connect(event):
    _record("$connect", event.to_dict())
    headers = {k.lower(): v for k, v in (event.to_dict().get("headers") or {}).items()}
    if "x-hold" in headers:
        RELEASE.wait(10)
    if "x-reject" in headers:
        return {"statusCode": int(headers["x-reject"])}
    return {"statusCode": 200}


@app.on_ws_message()
def ws_message(event):
    _record("$default", event.to_dict())
    body = event.body
    if body == "crash":
        raise RuntimeError("handler bug")
    if body == "block":
        RELEASE.wait(10)
        return {"statusCode": 200, "body": "unblocked"}
    if body == "push":
        app.websocket_api.send(event.connection_id, "pushed from the handler")
        return {"statusCode": 200}
    if body == "silent":
        return {"statusCode": 200}
    return {"statusCode": 200, "body": f"echo:{body[:40]}:{len(body)}"}


@app.on_ws_disconnect()
def ws_disconnect(event):
    _record("$disconnect", event.to_dict())


# a custom route key, as API Gateway route selection would reach it (Chalice's public
# decorators register only $default, so this uses its registration helper)
@app._create_registration_function(handler_type="on_ws_message", name="send_message",
                                   registration_kwargs={"route_key": "sendmessage"})
def send_message(event):
    _record("sendmessage", event.to_dict())
    return {"statusCode": 200, "body": "routed:sendmessage"}


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _aws_env(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with EVENTS_LOCK:
        EVENTS.clear()
    RELEASE.clear()
    yield
    RELEASE.set()


@pytest.fixture
def make_gateway():
    started = []

    def make(**overrides):
        app.websocket_api._endpoint = None   # each gateway has its own management port
        app.websocket_api._client = None
        gateway = LocalWebSocketGateway(app, GatewayConfig(**overrides)).start_in_thread()
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(make_gateway):
    return make_gateway()


def management(gateway):
    return boto3.client("apigatewaymanagementapi", endpoint_url=gateway.management_url,
                        region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def events(kind):
    with EVENTS_LOCK:
        return [event for k, event in EVENTS if k == kind]


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def refused_status(url, **kwargs):
    with pytest.raises(InvalidStatus) as info:
        with connect(url, open_timeout=10, **kwargs):
            pass
    return info.value.response.status_code


def connection_id_of(ws):
    """The connection id, as the app's $connect handler saw it for this client."""
    ws.send("silent")
    wait_for(lambda: events("$default"))
    return events("$default")[-1]["requestContext"]["connectionId"]


# --- $connect ---------------------------------------------------------------------------------

def test_connect_runs_the_authorizer_then_connect_with_context_headers_and_query(gateway):
    with connect(gateway.url + "?token=good&a=1&a=2&empty=",
                 additional_headers={"X-Custom": "v1"}, user_agent_header="conformance/1"):
        pass
    (auth,) = events("authorizer")
    (conn,) = events("$connect")
    assert auth["type"] == "REQUEST"
    assert ARN_RE.match(auth["methodArn"])
    assert "authorizer" not in auth["requestContext"]

    ctx = conn["requestContext"]
    assert ctx["routeKey"] == "$connect" and ctx["eventType"] == "CONNECT"
    assert ctx["messageDirection"] == "IN"
    assert ID_RE.match(ctx["connectionId"]) and ID_RE.match(ctx["requestId"])
    assert ctx["connectionId"] == auth["requestContext"]["connectionId"]
    assert ctx["apiId"] == "localdev01" and ctx["stage"] == "dev"
    assert ctx["domainName"] == f"127.0.0.1:{gateway.port}"
    assert ctx["identity"]["sourceIp"] == "127.0.0.1"
    assert ctx["identity"]["userAgent"] == "conformance/1"
    assert abs(ctx["requestTimeEpoch"] - time.time() * 1000) < 10_000
    assert ctx["connectedAt"] <= ctx["requestTimeEpoch"]
    authorizer = ctx["authorizer"]
    assert authorizer["principalId"] == "user-1"
    assert {k: authorizer[k] for k in ("sub", "n", "flag")} == {"sub": "user-1", "n": 3,
                                                                 "flag": True}
    assert isinstance(authorizer["integrationLatency"], int)

    assert conn["queryStringParameters"] == {"token": "good", "a": "2", "empty": ""}
    assert conn["multiValueQueryStringParameters"]["a"] == ["1", "2"]
    assert conn["headers"]["X-Custom"] == "v1"
    assert conn["multiValueHeaders"]["X-Custom"] == ["v1"]
    assert conn["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert conn["headers"]["Upgrade"].lower() == "websocket"
    assert "Sec-WebSocket-Key" in conn["headers"]


def test_absent_query_string_is_null_and_header_token_works(gateway):
    with connect(gateway.url, additional_headers={"Authorization": "good"}):
        pass
    (conn,) = events("$connect")
    assert conn["queryStringParameters"] is None
    assert conn["multiValueQueryStringParameters"] is None


def test_unauthorized_exception_refuses_with_401_and_never_runs_connect(gateway):
    assert refused_status(gateway.url + "?token=wrong") == 401
    assert refused_status(gateway.url) == 401
    assert events("$connect") == []
    assert len(events("authorizer")) == 2


@pytest.mark.parametrize("token, status", [("deny", 403), ("boom", 500), ("badctx", 500)])
def test_deny_policy_is_403_and_broken_authorizers_are_500(gateway, token, status):
    assert refused_status(gateway.url + f"?token={token}") == status
    assert events("$connect") == []


def test_wildcard_resource_in_policy_allows(gateway):
    with connect(gateway.url + "?token=wildcard"):
        pass
    assert events("$connect")[0]["requestContext"]["authorizer"]["principalId"] == "user-2"


def test_missing_identity_source_is_401_without_calling_the_authorizer(make_gateway):
    gateway = make_gateway(identity_sources=("route.request.querystring.token",))
    assert refused_status(gateway.url, additional_headers={"Authorization": "good"}) == 401
    assert events("authorizer") == []
    with connect(gateway.url + "?token=good"):
        pass
    assert len(events("$connect")) == 1


@pytest.mark.parametrize("status", [401, 403, 429])
def test_non_2xx_from_connect_refuses_the_handshake(gateway, status):
    assert refused_status(gateway.url + "?token=good",
                          additional_headers={"X-Reject": str(status)}) == status
    assert len(events("$connect")) == 1
    assert gateway.connection_ids() == []


def test_unknown_stage_path_is_403(gateway):
    assert refused_status(gateway.url.replace("/dev", "/prod") + "?token=good") == 403


def test_no_authorizer_configured_runs_connect_without_authorizer_context(make_gateway):
    gateway = make_gateway(authorizer=None)
    with connect(gateway.url):
        pass
    assert events("authorizer") == []
    assert "authorizer" not in events("$connect")[0]["requestContext"]


# --- messages ---------------------------------------------------------------------------------

def test_route_selection_on_action_with_default_fallback_and_response_body(gateway):
    with connect(gateway.url + "?token=good") as ws:
        ws.send(json.dumps({"action": "sendmessage", "x": 1}))
        assert ws.recv(5) == "routed:sendmessage"
        for body in (json.dumps({"action": "nosuchroute"}), "not json",
                     json.dumps({"action": 5}), json.dumps(["action"])):
            ws.send(body)
            assert ws.recv(5) == f"echo:{body[:40]}:{len(body)}"
    (routed,) = events("sendmessage")
    assert routed["requestContext"]["routeKey"] == "sendmessage"
    defaults = events("$default")
    assert [e["requestContext"]["routeKey"] for e in defaults] == ["$default"] * 4
    ctx = defaults[0]["requestContext"]
    assert ctx["eventType"] == "MESSAGE" and ctx["messageDirection"] == "IN"
    assert ID_RE.match(ctx["messageId"])
    assert ctx["messageId"] != defaults[1]["requestContext"]["messageId"]
    assert ctx["authorizer"]["sub"] == "user-1"  # the context follows the connection
    assert defaults[0]["isBase64Encoded"] is False
    assert ctx["connectionId"] == events("$connect")[0]["requestContext"]["connectionId"]


def test_binary_frames_arrive_base64_encoded(gateway):
    with connect(gateway.url + "?token=good") as ws:
        ws.send(b"\x00\x01binary")
        assert ws.recv(5).startswith("echo:AAFiaW5hcnk=")
    assert events("$default")[0]["isBase64Encoded"] is True


def test_route_responses_off_sends_nothing_back(make_gateway):
    gateway = make_gateway(route_responses=False)
    with connect(gateway.url + "?token=good") as ws:
        ws.send("hello")
        with pytest.raises(TimeoutError):
            ws.recv(0.5)
    assert len(events("$default")) == 1


def test_handler_error_sends_internal_server_error_frame(gateway):
    with connect(gateway.url + "?token=good") as ws:
        ws.send("crash")
        frame = json.loads(ws.recv(5))
        assert frame["message"] == "Internal server error"
        assert ID_RE.match(frame["connectionId"]) and ID_RE.match(frame["requestId"])
        ws.send("still open")
        assert ws.recv(5).startswith("echo:still open")


def test_a_blocking_handler_does_not_stall_other_connections(gateway):
    with connect(gateway.url + "?token=good") as slow, \
            connect(gateway.url + "?token=good") as fast:
        slow.send("block")
        wait_for(lambda: any(e["body"] == "block" for e in events("$default")))
        fast.send("quick")
        assert fast.recv(5).startswith("echo:quick")  # answered while "block" still waits
        RELEASE.set()
        assert slow.recv(5) == "unblocked"


def test_handler_can_push_through_app_websocket_api_send(gateway):
    with connect(gateway.url + "?token=good") as ws:
        ws.send("push")
        assert ws.recv(5) == "pushed from the handler"


# --- $disconnect ------------------------------------------------------------------------------

def test_disconnect_runs_with_the_client_close_code(gateway):
    with connect(gateway.url + "?token=good") as ws:
        connection_id = connection_id_of(ws)
        ws.close(4001, "bye")
    (event,) = wait_for(lambda: events("$disconnect"))
    ctx = event["requestContext"]
    assert ctx["routeKey"] == "$disconnect" and ctx["eventType"] == "DISCONNECT"
    assert ctx["connectionId"] == connection_id
    assert ctx["disconnectStatusCode"] == 4001
    assert ctx["disconnectReason"] == "bye"
    assert ctx["authorizer"]["sub"] == "user-1"


def test_stopping_the_gateway_disconnects_open_sockets(make_gateway):
    gateway = make_gateway()
    ws = connect(gateway.url + "?token=good")
    gateway.stop()
    with pytest.raises(ConnectionClosed):
        ws.recv(5)
    (event,) = wait_for(lambda: events("$disconnect"))
    assert event["requestContext"]["disconnectStatusCode"] == 1001


# --- management API (boto3) -------------------------------------------------------------------

def test_post_get_delete_through_boto3(gateway):
    client = management(gateway)
    with connect(gateway.url + "?token=good", user_agent_header="agent/2") as ws:
        connection_id = connection_id_of(ws)
        client.post_to_connection(ConnectionId=connection_id, Data=b'{"hello": "world"}')
        assert ws.recv(5) == '{"hello": "world"}'
        client.post_to_connection(ConnectionId=connection_id, Data=b"\xff\x00")
        assert ws.recv(5) == b"\xff\x00"

        info = client.get_connection(ConnectionId=connection_id)
        assert info["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": "agent/2"}
        assert abs(info["ConnectedAt"].timestamp() - time.time()) < 60
        assert info["LastActiveAt"] >= info["ConnectedAt"]

        client.delete_connection(ConnectionId=connection_id)
        with pytest.raises(ConnectionClosed):
            ws.recv(5)
    (event,) = wait_for(lambda: events("$disconnect"))
    assert event["requestContext"]["disconnectStatusCode"] == 1000
    for call in (client.post_to_connection, client.get_connection, client.delete_connection):
        kwargs = {"ConnectionId": connection_id}
        if call == client.post_to_connection:
            kwargs["Data"] = b"late"
        with pytest.raises(client.exceptions.GoneException):
            call(**kwargs)


def test_unknown_connection_is_gone_exception(gateway):
    client = management(gateway)
    with pytest.raises(client.exceptions.GoneException) as info:
        client.post_to_connection(ConnectionId="L0SM9cOFvHcCIhw=", Data=b"x")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 410


def test_connection_ids_are_url_decoded(gateway):
    gateway.new_connection_id = lambda: "a+b/c=d/e+f%g h="
    client = management(gateway)
    with connect(gateway.url + "?token=good") as ws:
        assert connection_id_of(ws) == "a+b/c=d/e+f%g h="
        client.post_to_connection(ConnectionId="a+b/c=d/e+f%g h=", Data=b"found")
        assert ws.recv(5) == "found"


def test_payloads_over_128_kb_are_413(gateway):
    client = management(gateway)
    with connect(gateway.url + "?token=good", max_size=None) as ws:
        connection_id = connection_id_of(ws)
        client.post_to_connection(ConnectionId=connection_id, Data=b"x" * (128 * 1024))
        assert len(ws.recv(5)) == 128 * 1024
        with pytest.raises(ClientError) as info:
            client.post_to_connection(ConnectionId=connection_id,
                                      Data=b"x" * (128 * 1024 + 1))
        assert info.value.response["Error"]["Code"] == "PayloadTooLargeException"
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413


def test_posting_before_connect_completes_is_gone(gateway):
    """Until $connect has answered, the connection does not exist for the management API."""
    client = management(gateway)
    result = {}

    def open_held_connection():
        with connect(gateway.url + "?token=good", additional_headers={"X-Hold": "1"}) as ws:
            result["reply"] = (ws.send("after"), ws.recv(5))[1]

    opener = threading.Thread(target=open_held_connection)
    opener.start()
    (held,) = wait_for(lambda: events("$connect"))
    with pytest.raises(client.exceptions.GoneException):
        client.post_to_connection(ConnectionId=held["requestContext"]["connectionId"],
                                  Data=b"early")
    RELEASE.set()
    opener.join(10)
    assert result["reply"].startswith("echo:after")


def test_per_post_latency_delays_management_calls(make_gateway):
    gateway = make_gateway(post_latency=0.3)
    client = management(gateway)
    with connect(gateway.url + "?token=good") as ws:
        connection_id = connection_id_of(ws)
        started = time.monotonic()
        client.post_to_connection(ConnectionId=connection_id, Data=b"slow")
        assert time.monotonic() - started >= 0.3
        assert ws.recv(5) == "slow"


def test_counters_report_invocations_and_management_calls(gateway):
    """GET /_local/counters (benchmarks): each function invocation and each management call
    with the status it answered."""
    import urllib.error
    import urllib.request

    def counters():
        url = f"http://127.0.0.1:{gateway.management_port}/_local/counters"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())

    client = management(gateway)
    with connect(gateway.url + "?token=good") as ws:
        connection_id = connection_id_of(ws)
        client.post_to_connection(ConnectionId=connection_id, Data=b"one")
        assert ws.recv(5) == "one"
        client.get_connection(ConnectionId=connection_id)
    wait_for(lambda: events("$disconnect"))
    with pytest.raises(client.exceptions.GoneException):
        client.post_to_connection(ConnectionId=connection_id, Data=b"late")
    unknown = urllib.request.Request(
        f"http://127.0.0.1:{gateway.management_port}/2015-03-31/functions/nope/invocations",
        data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(unknown, timeout=5)
    assert counters() == {
        "invocations": {"ws_authorizer": 1, "ws_connect": 1, "ws_message": 1,
                        "ws_disconnect": 1},
        "management": {"GetConnection 200": 1, "Invoke 404": 1, "PostToConnection 200": 1,
                       "PostToConnection 410": 1},
        "running": {},  # every invocation has returned
        "pending": {},  # and no closed socket waits for its $disconnect
    }


# --- limits -----------------------------------------------------------------------------------

def _close_code(ws):
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(5)
    return info.value.rcvd.code if info.value.rcvd else None


def test_frame_over_32_kb_closes_1009(gateway):
    with connect(gateway.url + "?token=good") as ws:
        ws.send("y" * (32 * 1024 + 1))
        assert _close_code(ws) == 1009
    (event,) = wait_for(lambda: events("$disconnect"))
    assert event["requestContext"]["disconnectStatusCode"] == 1009
    assert events("$default") == []


def test_fragmented_message_up_to_128_kb_is_delivered_and_over_closes_1009(gateway):
    chunk = "z" * (32 * 1024)
    with connect(gateway.url + "?token=good") as ws:
        ws.send([chunk] * 4)  # four 32 KB frames: one 128 KB message
        assert ws.recv(5).endswith(f":{128 * 1024}")
        ws.send([chunk] * 4 + ["!"])
        assert _close_code(ws) == 1009
    assert len(events("$default")) == 1


def test_idle_timeout_closes_1001(make_gateway):
    gateway = make_gateway(idle_timeout=0.6)
    with connect(gateway.url + "?token=good") as ws:
        for _ in range(3):  # activity keeps it open past the idle timeout
            time.sleep(0.3)
            ws.send("silent")
        assert _close_code(ws) == 1001
    (event,) = wait_for(lambda: events("$disconnect"))
    assert event["requestContext"]["disconnectStatusCode"] == 1001


def test_maximum_connection_life_closes_even_when_active(make_gateway):
    gateway = make_gateway(max_lifetime=0.8)
    with connect(gateway.url + "?token=good") as ws:
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as info:
            while time.monotonic() - started < 5:
                ws.send("silent")
                time.sleep(0.1)
        assert info.value.rcvd.code == 1001
        assert time.monotonic() - started >= 0.7


# --- policy evaluation (pure) -----------------------------------------------------------------

ARN = "arn:aws:execute-api:us-east-1:123456789012:localdev01/dev/$connect"


@pytest.mark.parametrize("statements, expected", [
    ([{"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": ARN}], True),
    ([{"Effect": "Allow", "Action": ["execute-api:*"], "Resource": ["arn:aws:execute-api:*"]}],
     True),
    ([{"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": ARN.replace("dev", "prod")}],
     False),
    ([{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}], False),
    ([{"Effect": "Allow", "Action": "*", "Resource": "*"},
      {"Effect": "Deny", "Action": "execute-api:Invoke", "Resource": ARN}], False),
    ([], False),
])
def test_policy_evaluation(statements, expected):
    assert evaluate_policy({"Version": "2012-10-17", "Statement": statements}, ARN) is expected


@pytest.mark.parametrize("policy", [None, {}, {"Statement": [{"Effect": "Maybe",
                                                               "Action": "*", "Resource": "*"}]}])
def test_malformed_policy_is_rejected(policy):
    with pytest.raises(ValueError):
        evaluate_policy(policy, ARN)
