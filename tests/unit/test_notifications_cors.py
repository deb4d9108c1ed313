"""CORS of POST /notifications, as a browser on another origin (the demo page) needs it.

A browser sends a preflight ``OPTIONS`` before the POST (the ``Authorization`` header and the
JSON content type are not CORS-safelisted, Fetch standard §4.8), without credentials; then it
only hands the page the POST's answer when it carries ``Access-Control-Allow-Origin``.
"""
from __future__ import annotations

import json

from chalicelib.registry import connections
from chalicelib.auth.principal import Principal
from tests.support.websocket import aws_env, management_api, registry  # noqa: F401


def _post(client, token, body):
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    return client.http.post("/notifications", headers=headers, body=body)


def test_the_preflight_needs_no_token_and_allows_the_post(client):
    response = client.http.options("/notifications", headers={
        "Origin": "http://127.0.0.1:8080", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"  # dev stage default
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed


def test_the_preflight_names_the_stage_origin(client, monkeypatch):
    monkeypatch.setenv("CORS_ALLOW_ORIGIN", "https://app.example.com")
    response = client.http.options("/notifications")
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert response.headers["Vary"] == "Origin"


def test_success_and_error_answers_carry_the_origin(registry, management_api, client,
                                                    dev_issuer):
    connections.register("alice-1=", Principal(sub="alice", issuer="https://issuer.example"))
    token = dev_issuer.mint("alice")
    ok = _post(client, token, json.dumps({"user_id": "alice", "event": "hi"}))
    bad_json = _post(client, token, "{")
    forbidden = _post(client, token, json.dumps({"user_id": "bob", "event": "hi"}))
    assert ok.status_code == 200
    assert json.loads(ok.body) == {"delivered": 1, "gone": 0, "failed": 0, "retryable": 0}
    assert bad_json.status_code == 400 and forbidden.status_code == 403
    assert json.loads(forbidden.body)["error"] == "forbidden"
    for response in (ok, bad_json, forbidden):
        assert response.headers["Access-Control-Allow-Origin"] == "*"
