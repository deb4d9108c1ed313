"""Lazily created, cached boto3 clients for the rooms that touch AWS.

boto3 is imported only inside :func:`client`, so importing ``app`` (and the authorizer's cold
start) never pays for it (~0.3 s). Clients are thread-safe and shared by the fan-out threads of
:mod:`chalicelib.delivery.push`; one is built per distinct set of arguments.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

_clients: Dict[Tuple[Any, ...], Any] = {}
_lock = threading.Lock()


def client(service: str, region: str, *, endpoint_url: Optional[str] = None,
           max_pool_connections: int = 10, max_attempts: int = 3,
           connect_timeout: float = 2, read_timeout: float = 5):
    """A cached boto3 client.

    Args:
        service: boto3 service name (``"dynamodb"``, ``"apigatewaymanagementapi"``...).
        region: AWS region.
        endpoint_url: explicit endpoint, or None for boto3's own resolution (which honours
            ``AWS_ENDPOINT_URL_<SERVICE>`` when the client is built).
        max_pool_connections: HTTP connections kept (botocore's default is 10; a fan-out of
            more threads needs as many).
        max_attempts: botocore's total attempts per call, standard retry mode (1 = no retry).
        connect_timeout, read_timeout: seconds.
    Returns:
        a ``botocore.client.BaseClient``.
    """
    key = (service, region, endpoint_url, max_pool_connections, max_attempts,
           connect_timeout, read_timeout)
    found = _clients.get(key)
    if found is None:
        with _lock:
            found = _clients.get(key)
            if found is None:
                import boto3  # lazy: importing app must not import boto3
                from botocore.config import Config

                found = boto3.session.Session().client(
                    service, region_name=region, endpoint_url=endpoint_url,
                    config=Config(max_pool_connections=max_pool_connections,
                                  retries={"mode": "standard", "total_max_attempts": max_attempts},
                                  connect_timeout=connect_timeout, read_timeout=read_timeout))
                _clients[key] = found
    return found


def reset_clients() -> None:
    """Forget every cached client and queue URL (tests; an endpoint variable changed in a
    running process)."""
    with _lock:
        _clients.clear()
        _queue_urls.clear()


# --- SQS ------------------------------------------------------------------------------------

#: ``SendMessageBatch`` limits: entries per call, and bytes of all bodies together (AWS SQS
#: API Reference, "SendMessageBatch")
SQS_BATCH_ENTRIES = 10
SQS_BATCH_BYTES = 262_144

_queue_urls: Dict[Tuple[str, str], str] = {}


def queue_url(sqs: Any, name: str, region: str) -> str:
    """The URL of queue ``name`` in ``region``: one ``GetQueueUrl`` per process, then cached.

    Args:
        sqs: the SQS client that asks (its own bounds apply).
    Raises:
        botocore's ``ClientError``/``BotoCoreError`` when SQS cannot answer.
    """
    found = _queue_urls.get((name, region))
    if found is None:
        found = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        with _lock:
            _queue_urls[(name, region)] = found
    return found


def forget_queue_urls() -> None:
    """Forget the cached queue URLs (tests; a changed ``PUSH_QUEUE_NAME``)."""
    with _lock:
        _queue_urls.clear()


def sqs_batches(bodies: Sequence[str]) -> List[List[int]]:
    """Indexes of ``bodies`` grouped for ``SendMessageBatch``: at most
    :data:`SQS_BATCH_ENTRIES` per group and :data:`SQS_BATCH_BYTES` of UTF-8 together (a
    body over the limit alone is a group of its own; SQS refuses it)."""
    groups: List[List[int]] = []
    current: List[int] = []
    size = 0
    for index, body in enumerate(bodies):
        length = len(body.encode("utf-8"))
        if current and (len(current) >= SQS_BATCH_ENTRIES or size + length > SQS_BATCH_BYTES):
            groups.append(current)
            current, size = [], 0
        current.append(index)
        size += length
    if current:
        groups.append(current)
    return groups
