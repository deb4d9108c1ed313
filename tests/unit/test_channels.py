"""Channel rules (chalicelib.channels): naming, kinds, patterns, deny-by-default."""
from __future__ import annotations

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from chalicelib import channels
from chalicelib.channels import ChannelGrant, ChannelRules, authorize, validate_channel_name
from chalicelib.errors import BadRequest, Forbidden, Unauthorized
from chalicelib.auth.principal import Principal

ALICE = Principal(sub="alice", issuer="https://issuer.example", claims={"name": "Alice"})
UUID_SUB = "3f1c2a9e-0b7d-4c55-9a1e-5d2b8c7e6f10"

CHARSET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-=@,.;"


# --- names ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "private-user-alice", "presence-room_1",
                                  "x=y@z,w.v;u", "A" * 164])
def test_valid_names_are_returned_unchanged(name):
    assert validate_channel_name(name) == name


@pytest.mark.parametrize("name, reason", [
    ("", "empty"),
    ("A" * 165, "164"),
    ("private-user-al ice", "may only contain"),
    ("#server-to-user-alice", "may only contain"),
    ("private-user-alicé", "may only contain"),
    ("presence-room\n", "may only contain"),
    ("a/b", "may only contain"),
    (None, "string"),
    (42, "string"),
    (["private-a"], "string"),
])
def test_invalid_names_are_bad_requests_without_echo(name, reason):
    with pytest.raises(BadRequest) as caught:
        validate_channel_name(name)
    assert reason in caught.value.public_message
    assert caught.value.status == 400
    if isinstance(name, str) and len(name) > 3:
        assert name not in caught.value.public_message


@pytest.mark.parametrize("name, kind", [
    ("news", "public"),
    ("privatenews", "public"),
    ("private-x", "private"),
    ("private-encrypted-x", "private-encrypted"),
    ("presence-x", "presence"),
    ("presencex", "public"),
])
def test_kind_comes_from_the_prefix(name, kind):
    assert channels.channel_kind(name) == kind


# --- the service's rules -------------------------------------------------------------------

def test_own_private_user_channel_is_granted_with_params():
    grant = authorize(ALICE, "private-user-alice")
    assert grant == ChannelGrant(channel_name="private-user-alice", kind="private",
                                 params={"user_id": "alice"}, rule="private-user-{user_id}")


def test_own_encrypted_user_channel_is_granted():
    grant = authorize(ALICE, "private-encrypted-user-alice")
    assert (grant.kind, grant.params) == ("private-encrypted", {"user_id": "alice"})


def test_uuid_subjects_with_dashes_match_their_channel():
    principal = Principal(sub=UUID_SUB, issuer="i")
    assert authorize(principal, f"private-user-{UUID_SUB}").params == {"user_id": UUID_SUB}
    with pytest.raises(Forbidden):
        authorize(principal, f"private-user-{UUID_SUB}-x")


@pytest.mark.parametrize("name", [
    "private-user-bob",
    "private-user-alice2",
    "private-user-",
    "private-encrypted-user-bob",
    "private-anything",
    "private-encrypted-anything",
    "private-encrypted-user-",
    "private-",
    "presence-",
])
def test_other_private_encrypted_and_presence_channels_are_denied(name):
    with pytest.raises(Forbidden) as caught:
        authorize(ALICE, name)
    assert caught.value.status == 403
    assert caught.value.body()["error"] == "forbidden"


def test_presence_rooms_are_open_to_authenticated_users():
    grant = authorize(ALICE, "presence-lobby-1")
    assert (grant.kind, grant.params) == ("presence", {"room": "lobby-1"})


def test_public_channels_need_no_rule():
    grant = authorize(ALICE, "news")
    assert (grant.kind, grant.params, grant.rule) == ("public", {}, None)


def test_no_principal_is_unauthorized_even_for_public_channels():
    with pytest.raises(Unauthorized):
        authorize(None, "news")


def test_bad_names_are_bad_requests_before_any_rule():
    with pytest.raises(BadRequest):
        authorize(ALICE, "private-user-alice!")


def test_grants_are_frozen():
    grant = authorize(ALICE, "news")
    with pytest.raises(Exception):
        grant.kind = "private"  # type: ignore[misc]


# --- declaring rules ------------------------------------------------------------------------

def test_decorator_registers_a_rule_with_named_parameters():
    rules = ChannelRules()
    seen = {}

    @rules.channel("private-team-{team_id}-{topic:[a-z]+}")
    def team(principal, team_id, topic):
        seen.update(team_id=team_id, topic=topic)
        return team_id in principal.claims.get("groups", [])

    member = Principal(sub="bob", issuer="i", claims={"groups": ["t-42"]})
    grant = rules.authorize(member, "private-team-t-42-news")
    assert grant.params == {"team_id": "t-42", "topic": "news"}
    assert seen == {"team_id": "t-42", "topic": "news"}
    with pytest.raises(Forbidden):
        rules.authorize(member, "private-team-t-43-news")
    with pytest.raises(Forbidden):  # custom regex: topic must be lowercase letters
        rules.authorize(member, "private-team-t-42-News")


def test_rule_function_form_and_first_allowing_rule_wins():
    rules = ChannelRules()
    rules.rule("presence-{room}", lambda principal, room: room == "vip")
    rules.rule("presence-{place}", lambda principal, place: True)
    assert rules.authorize(ALICE, "presence-vip").rule == "presence-{room}"
    second = rules.authorize(ALICE, "presence-hall")
    assert (second.rule, second.params) == ("presence-{place}", {"place": "hall"})


def test_rules_only_match_their_own_kind():
    rules = ChannelRules()
    rules.rule("private-{anything}", lambda principal, anything: True)
    assert rules.authorize(ALICE, "private-x").kind == "private"
    with pytest.raises(Forbidden):
        rules.authorize(ALICE, "private-encrypted-x")


def test_only_true_allows():
    rules = ChannelRules()
    rules.rule("private-a", lambda principal: "yes")
    rules.rule("private-b", lambda principal: 1)
    rules.rule("private-c", lambda principal: None)
    for name in ("private-a", "private-b", "private-c"):
        with pytest.raises(Forbidden):
            rules.authorize(ALICE, name)


def test_a_raising_rule_denies_and_is_logged(caplog):
    rules = ChannelRules()

    @rules.channel("private-broken-{x}")
    def broken(principal, x):
        raise KeyError("bug")

    with pytest.raises(Forbidden):
        rules.authorize(ALICE, "private-broken-1")
    assert "private-broken-{x}" in caplog.text


def test_an_empty_rule_set_denies_everything_but_public():
    rules = ChannelRules()
    assert rules.authorize(ALICE, "public-news").kind == "public"
    for name in ("private-user-alice", "presence-x", "private-encrypted-user-alice"):
        with pytest.raises(Forbidden):
            rules.authorize(ALICE, name)


@pytest.mark.parametrize("pattern", [
    "news-{x}",                 # public: no rule needed
    "private-{x",               # stray brace
    "private-x}",
    "private-{a}-{a}",          # repeated parameter
    "private-{1a}",             # invalid parameter name
    "private-a b-{x}",          # literal outside the charset
    "private-{x:[}",            # invalid regex
])
def test_malformed_patterns_are_refused_at_registration(pattern):
    with pytest.raises(ValueError):
        ChannelRules().rule(pattern, lambda principal, **params: True)


def test_a_predicate_must_be_callable():
    with pytest.raises(ValueError):
        ChannelRules().rule("private-x", "yes")  # type: ignore[arg-type]


def test_literal_regex_characters_in_patterns_are_literal():
    rules = ChannelRules()
    rules.rule("private-a.b", lambda principal: True)
    assert rules.authorize(ALICE, "private-a.b").kind == "private"
    with pytest.raises(Forbidden):
        rules.authorize(ALICE, "private-aXb")


# --- properties -----------------------------------------------------------------------------

@hsettings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.text(alphabet=CHARSET, max_size=200),
                 st.integers(), st.none(), st.binary(max_size=20)))
def test_authorize_only_ever_grants_or_raises_400_403(name):
    try:
        grant = authorize(ALICE, name)
    except (BadRequest, Forbidden) as err:
        assert err.status in (400, 403)
        return
    assert grant.channel_name == name
    assert isinstance(name, str) and 1 <= len(name) <= 164
    assert grant.kind in channels.KINDS
    if grant.kind == "private":
        assert name == "private-user-alice"
    if grant.kind == "private-encrypted":
        assert name == "private-encrypted-user-alice"


@hsettings(max_examples=200, deadline=None)
@given(st.text(alphabet=CHARSET, min_size=1, max_size=47))  # "=" escapes to 3 characters
def test_a_user_channel_is_granted_exactly_to_its_owner(sub):
    owner = Principal(sub=sub, issuer="i")
    name = f"private-user-{owner.user_id}"
    assert authorize(owner, name).params == {"user_id": owner.user_id}
    if owner.user_id != "alice":
        with pytest.raises(Forbidden):
            authorize(ALICE, name)


# --- client events ----------------------------------------------------------------------------

@pytest.mark.parametrize("channel, event_name, subscribed, error", [
    ("presence-room", "client-typing", ["presence-room"], None),
    ("private-user-alice", "client-sync", ["news", "private-user-alice"], None),
    ("presence-room", "typing", ["presence-room"], channels.ClientEventNameRefused),
    ("presence-room", "Client-typing", ["presence-room"], channels.ClientEventNameRefused),
    ("news", "client-x", ["news"], channels.ClientEventChannelRefused),
    ("private-encrypted-user-alice", "client-x", ["private-encrypted-user-alice"],
     channels.ClientEventChannelRefused),
    ("presence-room", "client-x", ["presence-other"], channels.NotSubscribed),
    ("presence-room", "client-x", [], channels.NotSubscribed),
    ("bad name", "client-x", ["bad name"], BadRequest),
    (None, "client-x", [], BadRequest),
])
def test_check_client_event_follows_pushers_rules(channel, event_name, subscribed, error):
    if error is None:
        assert channels.check_client_event(channel, event_name, subscribed) == channel
        return
    with pytest.raises(error) as caught:
        channels.check_client_event(channel, event_name, subscribed)
    assert caught.value.body()["message"]


def test_client_event_error_codes():
    assert [cls.code for cls in (channels.ClientEventNameRefused,
                                 channels.ClientEventChannelRefused, channels.NotSubscribed,
                                 channels.ClientEventRateLimited)] == \
        ["client_event_name", "client_event_channel", "not_subscribed",
         "client_event_rate_limited"]
    assert channels.is_client_event("client-x") and not channels.is_client_event("x-client-")
