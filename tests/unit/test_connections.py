"""The DynamoDB connection registry (chalicelib.registry) against moto."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from chalicelib.registry import connections, listing, rates, subscriptions, table
from chalicelib.registry.subscriptions import MAX_SUBSCRIPTIONS_PER_CONNECTION, SubscriptionLimit
from chalicelib.registry.table import MAX_CONNECTION_SECONDS, TABLE_SCHEMA, RegistryUnavailable
from chalicelib.auth.principal import Principal
from tests.conftest import ROOT
from tests.support.websocket import TABLE, aws_env, registry, serial_registry  # noqa: F401

ALICE = Principal(sub="alice", issuer="https://issuer.example", scopes=("read", "write"),
                  claims={"name": "Alice", "groups": ["admins"]})
BOB = Principal(sub="bob", issuer="https://issuer.example")


def _raw_items():
    client = table.dynamodb()
    return client.scan(TableName=TABLE)["Items"]


class _CallCounter:
    """Counts DynamoDB API calls made through the registry's clients (the audience Query
    has its own)."""

    def __init__(self):
        self.calls = []
        self.clients = [table.dynamodb(), table.audience_client()]
        for client in self.clients:
            client.meta.events.register("before-call.dynamodb", self._seen)

    def _seen(self, model, **kwargs):
        self.calls.append(model.name)

    def count(self, name):
        return self.calls.count(name)

    def close(self):
        for client in self.clients:
            client.meta.events.unregister("before-call.dynamodb", self._seen)


@pytest.fixture
def calls(registry):
    counter = _CallCounter()
    yield counter
    counter.close()


def test_create_table_follows_the_schema_with_ttl(registry):
    client = table.dynamodb()
    described = client.describe_table(TableName=TABLE)["Table"]
    assert described["KeySchema"] == TABLE_SCHEMA["KeySchema"]
    (index,) = described["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "audience-index"
    assert index["KeySchema"] == [{"AttributeName": "audience", "KeyType": "HASH"},
                                  {"AttributeName": "connection_id", "KeyType": "RANGE"}]
    ttl = client.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    # a second call leaves the existing table alone
    assert table.create_table() == TABLE


def test_register_writes_one_item_with_ttl_ip_and_user_agent(registry):
    stored = connections.register("conn-1=", ALICE, source_ip="198.51.100.4",
                                  user_agent="x" * 2000, connected_at=1_700_000_000)
    (item,) = _raw_items()
    assert item["connection_id"] == {"S": "conn-1="}
    assert item["user_id"] == {"S": "alice"}
    assert item["connected_at"] == {"N": "1700000000"}
    expires = int(item["expires_at"]["N"])
    assert 1_700_000_000 + MAX_CONNECTION_SECONDS < expires <= 1_700_000_000 + 3 * 3600
    assert item["source_ip"] == {"S": "198.51.100.4"}
    assert len(item["user_agent"]["S"]) == connections.MAX_USER_AGENT_LENGTH
    assert stored.expires_at == expires


def test_get_connection_returns_principal_and_channels(registry):
    connection = connections.register("conn-1=", ALICE, source_ip="198.51.100.4")
    subscriptions.subscribe(connection, "news")
    subscriptions.subscribe(connection, "presence-lobby")
    loaded = connections.get_connection("conn-1=")
    assert loaded.principal == ALICE
    assert loaded.user_id == "alice"
    assert loaded.channels == ("news", "presence-lobby")
    assert loaded.source_ip == "198.51.100.4"
    assert connections.get_connection("unknown=") is None


def test_subscribe_is_idempotent_and_unsubscribe_reports_removal(registry):
    connection = connections.register("conn-1=", ALICE)
    assert subscriptions.subscribe(connection, "news") is True
    assert subscriptions.subscribe(connections.get_connection("conn-1="), "news") is False
    assert subscriptions.subscribers_of_channel("news") == ["conn-1="]
    assert subscriptions.unsubscribe("conn-1=", "news") is True
    assert subscriptions.unsubscribe("conn-1=", "news") is False
    assert subscriptions.subscribers_of_channel("news") == []


def test_user_connections_and_channel_subscribers_are_one_query_each(registry, calls):
    for index in range(5):
        connection = connections.register(f"a{index}=", ALICE)
        subscriptions.subscribe(connection, "news")
    subscriptions.subscribe(connections.register("b0=", BOB), "news")
    connections.register("b1=", BOB)

    before = calls.count("Query")
    assert sorted(subscriptions.connections_of_user("alice")) == [f"a{i}=" for i in range(5)]
    assert calls.count("Query") == before + 1
    assert sorted(subscriptions.connections_of_user("bob")) == ["b0=", "b1="]
    assert calls.count("Query") == before + 2
    assert sorted(subscriptions.subscribers_of_channel("news")) == \
        sorted([f"a{i}=" for i in range(5)] + ["b0="])
    assert calls.count("Query") == before + 3
    assert subscriptions.subscribers_of_channel("other") == []


def test_expired_connections_are_not_audience(registry):
    old = connections.register("old=", ALICE, connected_at=time.time() - 3 * 3600)
    subscriptions.subscribe(old, "news")
    subscriptions.subscribe(connections.register("new=", ALICE), "news")
    assert subscriptions.connections_of_user("alice") == ["new="]
    assert subscriptions.subscribers_of_channel("news") == ["new="]
    assert connections.get_connection("old=") is None


def test_remove_connection_deletes_subscriptions_in_batches_and_is_idempotent(registry, calls):
    connection = connections.register("conn-1=", ALICE)
    names = [f"room-{i}" for i in range(60)]
    for name in names:
        subscriptions.subscribe(connection, name)
        connection = connections.Connection(**{**connection.__dict__,
                                               "channels": connection.channels + (name,)})
    subscriptions.subscribe(connections.register("other=", BOB), "room-1")

    assert connections.remove_connection("conn-1=") == 61
    assert calls.count("BatchWriteItem") == 3  # 61 deletes in batches of 25
    assert connections.get_connection("conn-1=") is None
    assert subscriptions.subscribers_of_channel("room-1") == ["other="]
    # other='s connection and subscription, and room-1's occupancy item (pusher_http): the
    # 59 rooms left empty lost theirs
    assert sorted(item["connection_id"]["S"] for item in _raw_items()) == \
        ["#occupancy#room-1", "other=", "other="]
    assert connections.remove_connection("conn-1=") == 0


def test_subscription_limit(registry):
    connection = connections.register("conn-1=", ALICE)
    full = connections.Connection(**{**connection.__dict__, "channels": tuple(
        f"c{i}" for i in range(MAX_SUBSCRIPTIONS_PER_CONNECTION))})
    with pytest.raises(SubscriptionLimit) as caught:
        subscriptions.subscribe(full, "one-more")
    assert caught.value.status == 400
    assert subscriptions.subscribers_of_channel("one-more") == []


def test_missing_table_is_registry_unavailable(registry, monkeypatch):
    monkeypatch.setenv("CONNECTIONS_TABLE", "no-such-table")
    from chalicelib import settings
    settings.reset()
    with pytest.raises(RegistryUnavailable) as caught:
        connections.register("conn-1=", ALICE)
    assert caught.value.status == 503
    assert "ResourceNotFoundException" in str(caught.value)
    assert caught.value.body() == {"error": "registry_unavailable",
                                   "message": "Connection registry unavailable"}


def test_importing_app_does_not_import_boto3():
    # Powertools (chalicelib.observability) imports the bare ``botocore`` package (~1 ms) to
    # register its User-Agent initializer; botocore's sessions, clients and loaders, the
    # expensive part, must stay unloaded
    code = ("import sys, app, chalicelib.registry.connections, chalicelib.registry.presence, chalicelib.delivery.push, "
            "chalicelib.dialects.native, chalicelib.doors.queue; "
            "print('boto3' in sys.modules, sorted(m for m in sys.modules "
            "if m.startswith('botocore.')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split(None, 1) == ["False", "[]"]


# --- client event rate limit ------------------------------------------------------------------

def test_client_event_rate_limit_counts_per_connection_and_second(registry):
    connections.register("conn-1=", ALICE)
    second = 1_700_000_000
    allowed = [rates.allow_client_event("conn-1=", 10, now=second + 0.05 * n)
               for n in range(12)]
    assert allowed == [True] * 10 + [False, False]
    assert rates.allow_client_event("conn-2=", 10, now=second + 0.5) is True
    assert rates.allow_client_event("conn-1=", 10, now=second + 1.0) is True
    windows = [item for item in _raw_items() if item["sk"]["S"].startswith("rate#")]
    assert {int(item["expires_at"]["N"]) for item in windows} == \
        {second + rates.RATE_ITEM_TTL_SECONDS,
         second + 1 + rates.RATE_ITEM_TTL_SECONDS}
    # rate windows are neither subscriptions nor audience, and leave with their connection
    assert connections.get_connection("conn-1=").channels == ()
    connections.remove_connection("conn-1=")
    assert {item["connection_id"]["S"] for item in _raw_items()} == {"conn-2="}


def test_client_event_rate_limit_holds_across_concurrent_invocations(serial_registry):
    from concurrent.futures import ThreadPoolExecutor

    connections.register("conn-1=", ALICE)
    second = int(time.time()) + 5  # one window for every call, whatever the clock does
    with ThreadPoolExecutor(max_workers=25) as pool:
        allowed = list(pool.map(
            lambda _: rates.allow_client_event("conn-1=", 10, now=second), range(50)))
    assert allowed.count(True) == 10


def test_subscribe_on_a_removed_connection_asks_to_reconnect(registry):
    from chalicelib.errors import Unauthorized

    connection = connections.register("conn-1=", ALICE)
    connections.remove_connection("conn-1=")
    with pytest.raises(Unauthorized):
        subscriptions.subscribe(connection, "news")
    assert _raw_items() == []


def test_channel_users_are_presence_members_and_signed_in_users(registry):
    """Pusher's users of a presence channel: the member an anonymous Pusher connection joined
    as (its signed channel_data), and the user of a native connection; anonymous connections
    that joined no member are not users."""
    native = connections.register("n1=", ALICE)
    subscriptions.subscribe(native, "presence-room")
    member = connections.register("p1=", None, dialect=connections.PUSHER)
    subscriptions.subscribe(member, "presence-room", member_user_id="bob")
    lurker = connections.register("p2=", None, dialect=connections.PUSHER)
    subscriptions.subscribe(lurker, "presence-room")
    assert listing.channel_user_ids("presence-room") == ["alice", "bob"]
