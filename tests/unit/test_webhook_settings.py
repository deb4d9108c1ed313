"""``PUSHER_WEBHOOKS`` (issue 10 D): external webhook targets, shaped like soketi's app webhook
config, validated when loaded with one clear message naming the entry — never the URL."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings as settings_h, strategies as st

from chalicelib import settings, webhook_settings
from chalicelib.errors import ConfigError

SECRET_URL = "https://hooks.example.com/pusher/s3cr3t-path?token=tok-123"


def load(monkeypatch, value, stage="prod"):
    monkeypatch.setenv("STAGE", stage)
    if value is None:
        monkeypatch.delenv("PUSHER_WEBHOOKS", raising=False)
    else:
        monkeypatch.setenv("PUSHER_WEBHOOKS",
                           value if isinstance(value, str) else json.dumps(value))
    settings.reset()
    return webhook_settings.webhook_targets()


def refused(monkeypatch, value, message_part, stage="prod"):
    with pytest.raises(ConfigError) as info:
        load(monkeypatch, value, stage)
    message = str(info.value)
    assert message_part in message
    assert "s3cr3t" not in message and "tok-123" not in message  # never the URL
    return message


def test_off_when_unset_or_empty(monkeypatch):
    assert load(monkeypatch, None) == ()
    assert load(monkeypatch, "[]") == ()


def test_a_full_target(monkeypatch):
    (target,) = load(monkeypatch, [{
        "url": SECRET_URL, "event_types": ["member_added", "member_removed"],
        "filter": {"channel_name_starts_with": "presence-", "channel_name_ends_with": "-room"},
        "headers": {"Authorization": "Bearer receiver-token"}}])
    assert target.url == SECRET_URL
    assert target.event_types == frozenset({"member_added", "member_removed"})
    assert (target.channel_name_starts_with, target.channel_name_ends_with) == \
        ("presence-", "-room")
    assert target.headers == (("Authorization", "Bearer receiver-token"),)


def test_every_event_type_we_send_is_accepted(monkeypatch):
    (target,) = load(monkeypatch, [{"url": SECRET_URL, "event_types": list(
        webhook_settings.WEBHOOK_EVENT_TYPES)}])
    assert target.event_types == {"channel_occupied", "channel_vacated", "member_added",
                                  "member_removed", "client_event", "cache_miss"}


@pytest.mark.parametrize("event_types", [["member_added", "member_joined"],
                                         ["subscription_count"], [], "member_added", [3]])
def test_unknown_or_missing_event_types_are_refused(monkeypatch, event_types):
    message = refused(monkeypatch, [{"url": SECRET_URL, "event_types": event_types}],
                      "PUSHER_WEBHOOKS[0].event_types")
    assert "member_added" in message  # the message lists the accepted names


@pytest.mark.parametrize("url", [
    "http://hooks.example.com/s3cr3t", "ftp://hooks.example.com/s3cr3t", "https:///s3cr3t",
    "hooks.example.com/s3cr3t", "https://user:s3cr3t@hooks.example.com/",
    "https://hooks.example.com:99999/s3cr3t", 42])
def test_urls_must_be_https(monkeypatch, url):
    refused(monkeypatch, [{"url": url, "event_types": ["member_added"]}],
            "PUSHER_WEBHOOKS[0].url")


def test_plain_http_only_to_loopback_on_the_dev_stage(monkeypatch):
    local = [{"url": "http://127.0.0.1:8080/s3cr3t", "event_types": ["cache_miss"]}]
    assert load(monkeypatch, local, stage="dev")[0].url == "http://127.0.0.1:8080/s3cr3t"
    assert load(monkeypatch, [{"url": "HTTP://localhost/s3cr3t",
                               "event_types": ["cache_miss"]}], stage="dev")
    refused(monkeypatch, local, "dev stage", stage="prod")
    refused(monkeypatch, [{"url": "http://hooks.example.com/s3cr3t",
                           "event_types": ["cache_miss"]}], "PUSHER_WEBHOOKS[0].url",
            stage="dev")


def test_at_most_ten_targets_each_url_once(monkeypatch):
    many = [{"url": f"https://hooks{i}.example.com/", "event_types": ["member_added"]}
            for i in range(11)]
    refused(monkeypatch, many, "at most 10")
    assert len(load(monkeypatch, many[:10])) == 10
    twice = [{"url": SECRET_URL, "event_types": ["member_added"]},
             {"url": SECRET_URL, "event_types": ["cache_miss"]}]
    refused(monkeypatch, twice, "PUSHER_WEBHOOKS[1].url")


@pytest.mark.parametrize("value, part", [
    ("not json", "PUSHER_WEBHOOKS must be a JSON list"),
    ('{"url": "x"}', "PUSHER_WEBHOOKS must be a JSON list"),
    ("[1]", "PUSHER_WEBHOOKS[0] must be an object"),
    ([{"event_types": ["member_added"]}], "PUSHER_WEBHOOKS[0].url"),
    ([{"url": SECRET_URL, "event_types": ["member_added"], "lambda_function": "f"}],
     "PUSHER_WEBHOOKS[0].lambda_function"),
    ([{"url": SECRET_URL, "event_types": ["member_added"], "filter": {"channel": "x"}}],
     "PUSHER_WEBHOOKS[0].filter"),
    ([{"url": SECRET_URL, "event_types": ["member_added"],
       "filter": {"channel_name_starts_with": 3}}], "PUSHER_WEBHOOKS[0].filter"),
    ([{"url": SECRET_URL, "event_types": ["member_added"],
       "headers": {"X-Pusher-Signature": "forged"}}], "PUSHER_WEBHOOKS[0].headers"),
    ([{"url": SECRET_URL, "event_types": ["member_added"],
       "headers": {"content-type": "text/plain"}}], "PUSHER_WEBHOOKS[0].headers"),
    ([{"url": SECRET_URL, "event_types": ["member_added"],
       "headers": {"X-Ok": "line\r\nX-Injected: 1"}}], "PUSHER_WEBHOOKS[0].headers"),
    ([{"url": SECRET_URL, "event_types": ["member_added"],
       "headers": {"Bad Name": "v"}}], "PUSHER_WEBHOOKS[0].headers"),
    ([{"url": SECRET_URL, "event_types": ["member_added"], "headers": ["X-A: b"]}],
     "PUSHER_WEBHOOKS[0].headers"),
])
def test_malformed_entries_are_refused_with_the_entry_named(monkeypatch, value, part):
    refused(monkeypatch, value, part)


def test_read_once_and_reset(monkeypatch):
    first = load(monkeypatch, [{"url": SECRET_URL, "event_types": ["member_added"]}])
    monkeypatch.setenv("PUSHER_WEBHOOKS", "[]")
    assert webhook_settings.webhook_targets() is first
    settings.reset()
    assert webhook_settings.webhook_targets() == ()


# --- issue 19 defect 5: what PUSHER_WEBHOOKS cannot send is refused at load -------------------

def headers_entry(headers):
    return [{"url": SECRET_URL, "event_types": ["member_added"], "headers": headers}]


@pytest.mark.parametrize("headers", [
    {"X-Receiver\n": "v"},  # a final newline: `$` matched before it
    {"X-Receiver": "price in €"}, {"X-Receiver": "line\u2028separator"},  # not Latin-1
    {"X-Receiver": "next\u0085line"},  # a C1 control (NEL)
    {"X-Pusher-Extra": "v"}, {"x-pusher-key": "forged"}, {"X-PUSHER-Anything": "v"},
], ids=["newline-name", "euro", "u2028", "c1", "x-pusher", "x-pusher-key", "X-PUSHER"])
def test_headers_http_client_cannot_send_or_pushers_own_are_refused(monkeypatch, headers):
    refused(monkeypatch, headers_entry(headers), "PUSHER_WEBHOOKS[0].headers")


def test_latin_1_header_values_are_kept(monkeypatch):
    (target,) = load(monkeypatch, headers_entry({"X-Receiver": "café\tau lait ÿ"}))
    assert target.headers == (("X-Receiver", "café\tau lait ÿ"),)


@settings_h(max_examples=300, deadline=None)
@given(name=st.text(max_size=70), value=st.text(max_size=100))
def test_every_header_the_loader_keeps_http_client_sends(name, value):
    """What the sender does with a target's headers (``http.client``, which encodes values
    as Latin-1 and refuses names and values it cannot frame): nothing the loader accepts
    fails there."""
    import http.client
    import os

    from chalicelib import settings as config

    os.environ["PUSHER_WEBHOOKS"] = json.dumps(headers_entry({name: value}))
    config.reset()
    try:
        (target,) = webhook_settings.webhook_targets()
    except ConfigError:
        return
    finally:
        del os.environ["PUSHER_WEBHOOKS"]
        config.reset()
    connection = http.client.HTTPConnection("127.0.0.1", 9)  # never connected
    connection.putrequest("POST", "/")
    for header, text in target.headers:
        connection.putheader(header, text)


@pytest.mark.parametrize("url", [
    "https://169.254.169.254/latest/meta-data/", "https://169.254.170.2/v2/credentials",
    "https://2852039166/", "https://0xa9fea9fe/", "https://0251.0376.0251.0376/",
    "https://169.254.43518/", "https://169.16689662/", "https://169.254.169.254./",
    "https://１６９．２５４．１６９．２５４/",
    "https://[fd00:ec2::254]/", "https://[FE80::1]/", "https://[fe80::1%25eth0]/",
    "https://[febf:ffff::1]/", "https://[::ffff:169.254.169.254]/",
    "https://[::ffff:a9fe:a9fe]/", "https://[::169.254.169.254]/",
    "https://[64:ff9b::a9fe:a9fe]/", "https://[2002:a9fe:a9fe::1]/",
])
def test_link_local_and_metadata_addresses_are_refused_in_every_spelling(monkeypatch, url):
    message = refused(monkeypatch, [{"url": url, "event_types": ["member_added"]}],
                      "PUSHER_WEBHOOKS[0].url")
    assert "link-local" in message


@pytest.mark.parametrize("url", [
    "https://hooks.example.com/", "https://10.0.0.5/", "https://169.255.0.1/",
    "https://[2001:db8::1]/", "https://[fec0::1]/", "https://[fd00:ec3::254]/",
    "https://0x7f.1/", "https://169.254.example.com/", "https://2852039166.example/",
])
def test_other_hosts_are_kept(monkeypatch, url):
    assert load(monkeypatch, [{"url": url, "event_types": ["member_added"]}])[0].url == url


@pytest.mark.parametrize("host, address", [
    ("2852039166", "169.254.169.254"), ("0xA9FEA9FE", "169.254.169.254"),
    ("0251.0376.0251.0376", "169.254.169.254"), ("169.254.43518", "169.254.169.254"),
    ("169.16689662", "169.254.169.254"), ("127.1", "127.0.0.1"), ("0", "0.0.0.0"),
    ("4294967296", None), ("256.1.1.1", None), ("08.1.1.1", None), ("1.2.3.4.5", None),
    ("example.com", None), ("", None),
])
def test_inet_aton_spellings(host, address):
    """What glibc's inet_aton (so getaddrinfo, so every HTTP client) reads as an IPv4
    address."""
    from chalicelib.addresses import inet_aton_address

    found = inet_aton_address(host.lower())
    assert (str(found) if found else None) == address
    import socket

    try:
        expected = socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        expected = None
    if host:
        assert (str(found) if found else None) == expected
