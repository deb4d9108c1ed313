"""API-Gateway-shaped Lambda events for the WebSocket handlers and the SQS worker.

Shapes follow the AWS docs ("Setting up data mapping for WebSocket APIs", "WebSocket API
request context" and "Using Lambda with Amazon SQS"): a WebSocket event has ``requestContext``
with ``routeKey``, ``eventType`` (``CONNECT``/``MESSAGE``/``DISCONNECT``), ``connectionId``,
``domainName``, ``stage``, ``apiId``, ``connectedAt`` (epoch ms), ``identity.sourceIp``,
``identity.userAgent`` and, behind a Lambda authorizer, ``authorizer`` (its context plus
``principalId``). ``$connect`` carries ``headers``/``multiValueHeaders`` and
``queryStringParameters``; ``$default`` carries ``body`` and ``isBase64Encoded``.

``ttl_remove`` builds a DynamoDB Streams record of a TTL delete (Developer Guide, "DynamoDB
Streams and Time to Live": ``userIdentity`` ``dynamodb.amazonaws.com``).

Every builder returns a fresh ``dict``; invoke with Chalice's test client,
``client.lambda_.invoke("ws_connect", event)``, or hand it to a local gateway.
"""
from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any, Dict, Iterable, Mapping, Optional

API_ID = "abc123defg"
STAGE = "test"
REGION = "us-east-1"
DOMAIN = f"{API_ID}.execute-api.{REGION}.amazonaws.com"
SOURCE_IP = "203.0.113.7"
USER_AGENT = "pytest-websocket/1.0"


def new_connection_id() -> str:
    """A fresh connection id in API Gateway's style (12 base64 characters ending in ``=``)."""
    return base64.b64encode(uuid.uuid4().bytes[:8]).decode()[:11] + "="


def _request_context(route_key: str, event_type: str, connection_id: str, *,
                     domain: str = DOMAIN, stage: str = STAGE, api_id: str = API_ID,
                     source_ip: str = SOURCE_IP, user_agent: Optional[str] = USER_AGENT,
                     connected_at_ms: Optional[int] = None,
                     authorizer: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    now_ms = int(time.time() * 1000)
    context: Dict[str, Any] = {
        "routeKey": route_key,
        "eventType": event_type,
        "messageDirection": "IN",
        "extendedRequestId": uuid.uuid4().hex[:16] + "=",
        "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
        "stage": stage,
        "connectedAt": connected_at_ms if connected_at_ms is not None else now_ms,
        "requestTimeEpoch": now_ms,
        "identity": {"sourceIp": source_ip, "userAgent": user_agent},
        "requestId": uuid.uuid4().hex[:16] + "=",
        "domainName": domain,
        "connectionId": connection_id,
        "apiId": api_id,
    }
    if authorizer is not None:
        context["authorizer"] = dict(authorizer)
    return context


def connect_event(connection_id: Optional[str] = None, *,
                  headers: Optional[Mapping[str, str]] = None,
                  query: Optional[Mapping[str, str]] = None,
                  token: Optional[str] = None,
                  authorizer: Optional[Mapping[str, Any]] = None,
                  **context: Any) -> Dict[str, Any]:
    """A ``$connect`` event.

    Args:
        connection_id: defaults to a fresh id.
        headers: extra handshake headers (``Authorization``...).
        query: query string parameters (``token``, ``Auth``, ``authorization``...).
        token: shortcut for ``headers={"Authorization": "Bearer <token>"}``.
        authorizer: the Lambda authorizer's context (``principalId`` is added from ``sub``).
        context: overrides for the request context (``domain``, ``stage``, ``api_id``,
            ``source_ip``, ``user_agent``, ``connected_at_ms``).
    """
    connection_id = connection_id or new_connection_id()
    all_headers = {
        "Host": context.get("domain", DOMAIN),
        "Sec-WebSocket-Key": base64.b64encode(uuid.uuid4().bytes).decode(),
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits",
        "X-Forwarded-For": context.get("source_ip", SOURCE_IP),
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    }
    if context.get("user_agent", USER_AGENT):
        all_headers["User-Agent"] = context.get("user_agent", USER_AGENT)
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    all_headers.update(headers or {})
    if authorizer is not None and "principalId" not in authorizer:
        authorizer = {**authorizer, "principalId": authorizer.get("sub", "user")}
    return {
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": dict(query) if query else None,
        "multiValueQueryStringParameters": ({k: [v] for k, v in query.items()}
                                            if query else None),
        "requestContext": _request_context("$connect", "CONNECT", connection_id,
                                           authorizer=authorizer, **context),
        "isBase64Encoded": False,
    }


def message_event(connection_id: str, body: Any = None, *, raw: Optional[str] = None,
                  binary: Optional[bytes] = None, **context: Any) -> Dict[str, Any]:
    """A ``$default`` event.

    Args:
        connection_id: the sender.
        body: a JSON value to send (encoded here), unless ``raw`` or ``binary`` is given.
        raw: the exact text frame (for invalid JSON and the like).
        binary: a binary frame (sent base64-encoded with ``isBase64Encoded``).
        context: request context overrides (see :func:`connect_event`).
    """
    if binary is not None:
        text, encoded = base64.b64encode(binary).decode(), True
    elif raw is not None:
        text, encoded = raw, False
    else:
        text, encoded = json.dumps(body), False
    return {
        "requestContext": _request_context("$default", "MESSAGE", connection_id, **context),
        "body": text,
        "isBase64Encoded": encoded,
    }


def disconnect_event(connection_id: str, *, status_code: int = 1001,
                     reason: str = "Going away", **context: Any) -> Dict[str, Any]:
    """A ``$disconnect`` event (``disconnectStatusCode`` / ``disconnectReason``)."""
    ctx = _request_context("$disconnect", "DISCONNECT", connection_id, **context)
    ctx["disconnectStatusCode"] = status_code
    ctx["disconnectReason"] = reason
    return {
        "headers": {"Host": context.get("domain", DOMAIN),
                    "x-api-key": "", "x-restapi": ""},
        "requestContext": ctx,
        "isBase64Encoded": False,
    }


def sqs_record(body: Any, *, message_id: Optional[str] = None,
               queue: str = "realtime-push-test") -> Dict[str, Any]:
    """One SQS record; ``body`` is JSON-encoded unless it is already a ``str``."""
    now_ms = str(int(time.time() * 1000))
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": "AQEB" + uuid.uuid4().hex,
        "body": body if isinstance(body, str) else json.dumps(body),
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": now_ms,
                       "SenderId": "AIDAEXAMPLE", "ApproximateFirstReceiveTimestamp": now_ms},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:{queue}",
        "awsRegion": REGION,
    }


def sqs_event(records: Iterable[Dict[str, Any]]) -> Dict[str, Any]:
    """An SQS event with the given records (see :func:`sqs_record`)."""
    return {"Records": list(records)}


def ttl_remove(item: Mapping[str, Any]) -> Dict[str, Any]:
    """A REMOVE record as DynamoDB Streams reports a TTL delete of ``item`` (its attributes in
    DynamoDB JSON; OLD_IMAGE view), for ``registry_stream``."""
    return {"eventID": "1", "eventName": "REMOVE", "eventSource": "aws:dynamodb",
            "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
            "dynamodb": {"Keys": {k: item[k] for k in ("connection_id", "sk")},
                         "OldImage": dict(item), "StreamViewType": "OLD_IMAGE"}}
