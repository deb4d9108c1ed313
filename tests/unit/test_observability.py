"""Structured logs (issue 12): JSON lines from Powertools with the invocation's correlation
fields, per-stage log level, and nothing secret — through Chalice's test client with real
tokens from ``dev_issuer``, a moto registry and a real management API on 127.0.0.1."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from chalicelib import settings
from tests.support import events
from tests.support.websocket import aws_env, management_api, registry  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent.parent


class Context:
    """The Lambda context fields a handler reads (as Lambda passes them)."""

    def __init__(self, function_name: str, request_id: str) -> None:
        self.function_name = function_name
        self.aws_request_id = request_id


@pytest.fixture
def ws(registry, management_api, client):
    return client, management_api


def _lines_about(json_log, fragment):
    return [line for line in json_log.lines() if fragment in line["message"]]


# --- logs -------------------------------------------------------------------------------------

def test_connect_lines_are_json_with_the_invocation_fields(ws, dev_issuer, json_log):
    client, _ = ws
    event = events.connect_event(token=dev_issuer.mint("alice"))
    connection_id = event["requestContext"]["connectionId"]
    assert client.lambda_.invoke("ws_connect", event).payload == {"statusCode": 200}
    (line,) = _lines_about(json_log, f"connected {connection_id}")
    assert line["level"] == "INFO" and line["name"] == "realtime.ws"
    assert line["service"] == "realtime" and line["timestamp"]
    assert line["function_name"] == "ws_connect"  # the Lambda context's (test client's name)
    assert line["function_request_id"]
    assert line["route_key"] == "$connect"
    assert line["connection_id"] == connection_id
    assert line["dialect"] == "native"
    assert line["user_id"] == "alice"


def test_frame_error_lines_carry_the_connection_and_user(ws, dev_issuer, json_log):
    client, api = ws
    event = events.connect_event(token=dev_issuer.mint("bob"))
    connection_id = event["requestContext"]["connectionId"]
    client.lambda_.invoke("ws_connect", event)
    client.lambda_.invoke("ws_message", events.message_event(
        connection_id, {"action": "subscribe", "channel": "private-user-carol"}))
    (line,) = [line for line in json_log.lines() if line["message"].startswith(
        "$default subscribe: ")]
    assert line["level"] == "WARNING"
    assert (line["route_key"], line["connection_id"], line["user_id"], line["dialect"]) == \
        ("$default", connection_id, "bob", "native")
    assert json.loads(api.received[connection_id][-1])["type"] == "error"


def test_authorizer_lines_name_the_function_and_request(app_env, json_log):
    import app as app_module

    event = {"type": "REQUEST", "headers": {}, "queryStringParameters": None,
             "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/dev/$connect"}
    with pytest.raises(Exception, match="^Unauthorized$"):
        app_module.ws_authorizer(event, Context("realtime-dev-ws_authorizer", "req-42"))
    (line,) = _lines_about(json_log, "ws_authorizer: no_token")
    assert line["function_name"] == "realtime-dev-ws_authorizer"
    assert line["function_request_id"] == "req-42"
    assert line["level"] == "WARNING"


def test_rest_lines_carry_the_route_and_the_caller(client, dev_issuer, json_log):
    token = dev_issuer.mint("dave")
    response = client.http.post("/notifications", body="{", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert response.status_code == 400
    (line,) = _lines_about(json_log, "POST /notifications: bad_request")
    assert line["route_key"] == "POST /notifications"
    assert line["user_id"] == "dave"
    assert line["function_name"] and line["function_request_id"]
    assert token not in json_log.text


def test_fields_do_not_leak_into_the_next_invocation(ws, dev_issuer, json_log):
    client, _ = ws
    client.lambda_.invoke("ws_connect", events.connect_event(token=dev_issuer.mint("erin")))
    logging.getLogger("realtime.test").info("between invocations")
    (line,) = _lines_about(json_log, "between invocations")
    assert not {"user_id", "connection_id", "route_key", "function_name"} & set(line)


def test_every_line_is_one_json_object_even_with_forged_newlines(ws, dev_issuer, json_log):
    client, _ = ws
    event = events.connect_event(token=dev_issuer.mint("frank"))
    connection_id = event["requestContext"]["connectionId"]
    client.lambda_.invoke("ws_connect", event)
    client.lambda_.invoke("ws_message", events.message_event(
        connection_id, {"action": "subscribe", "channel": "x\nERROR forged"}))
    lines = json_log.text.splitlines()
    assert lines and all(json.loads(line)["message"] for line in lines)
    assert not any(line.startswith("ERROR forged") for line in lines)


# --- log level per stage ----------------------------------------------------------------------

def test_each_stage_sets_its_log_level_in_config_json():
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    levels = {name: stage["environment_variables"].get("POWERTOOLS_LOG_LEVEL")
              for name, stage in config["stages"].items()}
    assert levels == {"dev": "DEBUG", "staging": "INFO", "prod": "INFO"}


@pytest.mark.parametrize("value, level, problems", [
    (None, "INFO", 0), ("debug", "DEBUG", 0), ("WARNING", "WARNING", 0), ("loud", "INFO", 1)])
def test_log_level_setting(monkeypatch, value, level, problems):
    if value is None:
        monkeypatch.delenv("POWERTOOLS_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", value)
    settings.reset()
    loaded = settings.observability_settings()
    assert loaded.log_level == level
    assert len(loaded.problems) == problems
    if problems:
        assert "POWERTOOLS_LOG_LEVEL" in loaded.problems[0] and "loud" not in loaded.problems[0]


def test_the_stage_log_level_reaches_the_logger(tmp_path):
    import subprocess
    import sys

    code = ("import logging, app; logging.getLogger('realtime.x').debug('dbg-line'); "
            "logging.getLogger('realtime.x').info('info-line')")
    shown = {}
    for level in ("DEBUG", "INFO"):
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                                text=True, timeout=60,
                                env={"PATH": "/usr/bin:/bin", "POWERTOOLS_LOG_LEVEL": level})
        assert result.returncode == 0, result.stderr
        shown[level] = [json.loads(line)["message"] for line in result.stdout.splitlines()]
    assert shown == {"DEBUG": ["dbg-line", "info-line"], "INFO": ["info-line"]}


# --- cold start ---------------------------------------------------------------------------------

def test_the_authorizers_cold_start_loads_no_push_engine_nor_pusher():
    """Importing app (all the authorizers' functions run) leaves the other rooms for their
    first use: Powertools' logging and metrics fit in the cold-start budget that way."""
    import subprocess
    import sys

    code = ("import sys, app; heavy = ['chalicelib.delivery.push', 'chalicelib.delivery.sender', "
            "'chalicelib.registry.table', 'chalicelib.dialects.native', "
            "'chalicelib.dialects.pusher.auth', 'pusher', "
            "'requests']; print(sorted(m for m in heavy if m in sys.modules)); "
            "app.ws.on_connect; "
            "print('chalicelib.delivery.push' in sys.modules, type(app.ws).__name__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "True module"]
