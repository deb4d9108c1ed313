"""The demo page of the local stack in headless Chromium (Debian's /usr/bin/chromium driven by
Playwright), used the way a person uses it: every button is pressed, what the page shows is
asserted, and any console error, page error, failed request or HTTP error the test did not
provoke on purpose fails the test. A screenshot is saved to artifacts/web-page.png.

The page runs the browser build of pusher-js against two Pusher-protocol servers side by side,
soketi and our own WebSocket API (issue 10 F: a scenario in Chromium for both servers);
``test_pusher_js_panel`` runs the same steps against each panel."""
from __future__ import annotations

import base64
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List
from urllib.parse import urlsplit

import pytest
import requests

from devtools.stack import Ports, Stack, stage_env
from tests.support.local_stack import running_stack

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: every button of devtools/web/index.html; the tests press each one
BUTTONS = {"signin-button", "token-button", "notify", "ping", "trigger",
           "pusher-soketi-toggle", "pusher-ours-toggle"}
#: the pusher-js panels of the page: soketi and our own WebSocket API (Pusher dialect)
SERVERS = ("soketi", "ours")


def _chromium_or_skip() -> str:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing (CI installs Debian's chromium: see .ci/run)")
    pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    _chromium_or_skip()
    with running_stack(tmp_path_factory.mktemp("web-stack-run")) as running:
        yield running


@dataclass
class Problem:
    kind: str  # "console", "pageerror", "requestfailed", "http"
    text: str
    url: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.text} [{self.url}]"


@dataclass
class Problems:
    """Everything that went wrong in the browser. A test takes out, with :meth:`expect`, the
    failures it provoked on purpose; whatever is left fails it."""

    seen: List[Problem] = field(default_factory=list)

    def watch(self, page) -> None:
        page.on("console", lambda m: m.type == "error" and self.seen.append(
            Problem("console", m.text, m.location.get("url", ""))))
        page.on("pageerror", lambda exc: self.seen.append(Problem("pageerror", str(exc))))
        page.on("requestfailed", lambda r: self.seen.append(
            Problem("requestfailed", r.failure or "", r.url)))
        page.on("response", lambda r: r.status >= 400 and self.seen.append(
            Problem("http", str(r.status), r.url)))

    def expect(self, what: str, match: Callable[[Problem], bool], at_least: int = 1) -> None:
        """Remove the problems ``match`` accepts; at least ``at_least`` of them must be there."""
        taken = [p for p in self.seen if match(p)]
        assert len(taken) >= at_least, f"expected {what}; saw: {[str(p) for p in self.seen]}"
        self.seen = [p for p in self.seen if not match(p)]

    def assert_none(self) -> None:
        assert not self.seen, "unexpected browser problems:\n" + "\n".join(map(str, self.seen))


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (starting Playwright and Chromium costs about a
    second); each test gets a fresh context of its own (:func:`browser_page`)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=_chromium_or_skip(),
                                              headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def browser_page(browser):
    """A page in a new browser context: no cookies, storage or cache of another test."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        problems = Problems()
        problems.watch(page)
        yield page, problems
    finally:
        context.close()


def _open(page, stack) -> None:
    page.goto(stack.web_url)
    page.wait_for_selector("body[data-ready=true]")
    assert sorted(page.eval_on_selector_all("button", "bs => bs.map(b => b.id)")) == \
        sorted(BUTTONS), "a button the tests do not press"
    assert page.is_hidden("#error")


def _paste_token(page, token: str) -> None:
    if not page.is_visible("#token"):
        page.click("#signin details summary")
    page.fill("#token", token)
    page.click("#token-button")


def _count(page, selector: str) -> int:
    return page.locator(selector).count()


def _wait_count(page, selector: str, n: int) -> None:
    page.wait_for_function("([s, n]) => document.querySelectorAll(s).length >= n", arg=[selector, n])


def _arrives(page, selector: str):
    """Wait for ``selector``, failing at once with the page's own message if it shows an
    error meanwhile."""
    page.wait_for_selector(f"{selector}, #log li[data-transport=error]")
    errors = page.locator("#log li[data-transport=error]").all_inner_texts()
    assert not errors, f"the page shows errors: {errors}"
    return page.wait_for_selector(selector)


def _figure(page, selector: str, attribute: str = "") -> float:
    value = page.get_attribute(selector, attribute) if attribute else page.inner_text(selector)
    return float(value or 0)


def _figure_reaches(page, selector: str, at_least: float, attribute: str = "") -> None:
    """Wait until the live panel's figure (text, or ``attribute``) is >= ``at_least``: the
    functions printed EMF, the stack counted it, the page polled /metrics.json and drew it."""
    page.wait_for_function(
        "([s, a, n]) => Number(a ? document.querySelector(s).getAttribute(a)"
        " : document.querySelector(s).textContent) >= n", arg=[selector, attribute, at_least],
        timeout=15_000)


WS_SUBSCRIBED = "#log li[data-transport=websocket][data-event=subscribed]"
HELLO = "#log li[data-transport=websocket][data-event=hello]"
TRIGGERED = "#log li[data-transport=http][data-event='POST /dev-trigger']"


def _panel(server: str) -> str:
    return f"#pusher-{server}"


def _arrived(server: str, event: str) -> str:
    """An event listed in a pusher-js panel."""
    return f"{_panel(server)} .events li[data-event='{event}']"


def _panel_ready(page, server: str, user_id: str, member: str, subscriptions: int = 2,
                 signins: int = 1) -> None:
    """Wait until the panel shows pusher-js connected, ``subscriptions`` subscriptions listed
    (the private channel through our /pusher/auth and presence-lobby), ``signins`` user
    sign-ins through our /pusher/user-auth, and ``member`` among the presence members."""
    panel = _panel(server)
    page.wait_for_selector(f"{panel} .status[data-state=connected]")
    _wait_count(page, _arrived(server, "subscribed"), subscriptions)
    _wait_count(page, _arrived(server, "signed-in"), signins)
    page.wait_for_selector(f"{panel} .user[data-state=signed-in]")
    assert page.inner_text(f"{panel} .user") == f"signed in as {user_id}"
    page.wait_for_function("([s, m]) => document.querySelector(s).textContent.includes(m)",
                           arg=[f"{panel} .members", member])
    channels = page.inner_text(f"{panel} .channels")
    assert f"private-user-{user_id}" in channels and "presence-lobby" in channels


def _members_are(page, server: str, names: str) -> None:
    """Wait until the panel's presence-lobby members read exactly ``names`` (a member of an
    earlier test leaves when its socket's close has been handled)."""
    page.wait_for_function("([s, t]) => document.querySelector(s).textContent === t",
                           arg=[f"{_panel(server)} .members", names])


def _trigger(page, times: int = 1) -> str:
    """Press "Trigger with the pusher library"; returns the id the stack put in the events."""
    page.click("#trigger")
    _wait_count(page, TRIGGERED, times)
    answer = page.locator(TRIGGERED).first.inner_text()
    assert "soketi triggered" in answer and "ours triggered" in answer, answer
    return re.search(r"id ([0-9a-f]{8})", answer).group(1)


def test_every_button_works_for_a_signed_in_person(stack, browser_page):
    page, problems = browser_page
    sub = f"web-{uuid.uuid4().hex[:8]}"
    _open(page, stack)

    # 1. "Get a dev token and connect"
    page.fill("#sub", sub)
    page.fill("#name", "Web Tester")
    page.click("#signin-button")
    page.wait_for_selector("#ws-status[data-state=open]")
    page.wait_for_selector(f"{WS_SUBSCRIBED}:has-text('private-user-{sub}')")
    for server in SERVERS:  # presence member from our user-info, on both servers
        _panel_ready(page, server, sub, "Web Tester")
    assert page.inner_text("#who") == f"signed in as {sub}"
    # the live panel: the $connect's ConnectionsOpened, and the subscription's reply delivered
    _figure_reaches(page, "#chart", 1, "data-open")
    assert _figure(page, "#m-open") >= 1
    _figure_reaches(page, "#m-delivered", 1, "data-value")
    _figure_reaches(page, "#chart", 1, "data-peak")  # a bar on the chart
    delivered = _figure(page, "#m-delivered", "data-value")
    allowed = int(page.inner_text("#m-auth").split("/")[0])
    assert allowed >= 1  # ws_authorizer's figure... or jwt_auth's: both count

    # 2. "Send me a notification": the browser's own POST (CORS preflight included) and the
    #    push arriving over the API Gateway WebSocket and, as a user event (pusher-js signed
    #    in), over our WebSocket API in the Pusher dialect: one push engine, two dialects.
    #    soketi is another server: POST /notifications never reaches it.
    page.click("#notify")
    answer = _arrives(page, "#log li[data-transport=http][data-event='POST /notifications']")
    hello = _arrives(page, HELLO)
    assert "demo page" in hello.inner_text()
    user_hello = _arrives(page, _arrived("ours", "hello"))
    assert f"#server-to-user-{sub}" in user_hello.inner_text()
    assert "demo page" in user_hello.inner_text()
    assert "HTTP 200" in answer.inner_text() and "delivered 2" in answer.inner_text()
    assert _count(page, _arrived("soketi", "hello")) == 0
    _figure_reaches(page, "#m-delivered", delivered + 1, "data-value")  # the chart moved
    delivered = _figure(page, "#m-delivered", "data-value")

    # 3. "Ping over the WebSocket"
    page.click("#ping")
    _arrives(page, "#log li[data-transport=websocket][data-event=pong]")
    _figure_reaches(page, "#m-delivered", delivered + 1, "data-value")  # the pong

    # 4. "Trigger with the pusher library": the stack's server library publishes the same
    #    event to soketi and to our Pusher HTTP API (only host and port differ); it arrives in
    #    both pusher-js panels and, through our engine, over the native WebSocket too
    trigger_id = _trigger(page)
    for item in (_arrived("soketi", "library-hello"), _arrived("ours", "library-hello"),
                 "#log li[data-transport=websocket][data-event=library-hello]"):
        assert trigger_id in _arrives(page, item).inner_text()

    # 5. "Connect with this token": a pasted (valid) token for another user replaces the first;
    #    an Auth0 subject, whose user id escapes the "|" (README, "User ids")
    other = f"auth0|web-{uuid.uuid4().hex[:8]}"
    other_user_id = other.replace("|", "=7C")
    _paste_token(page, stack.mint(other, name="Pasted Person"))
    page.wait_for_selector(f"#who:text-is('signed in as {other}')")
    page.wait_for_selector(f"{WS_SUBSCRIBED}:has-text('private-user-{other_user_id}')")
    page.wait_for_selector("#ws-status[data-state=open]")
    for server in SERVERS:  # a new pusher-js client per server, its list starts afresh
        _panel_ready(page, server, other_user_id, "Pasted Person")
        assert _count(page, _arrived(server, "library-hello")) == 0
    page.click("#notify")
    _wait_count(page, HELLO, 2)
    _arrives(page, _arrived("ours", "hello"))
    page.click("#ping")
    _wait_count(page, "#log li[data-transport=websocket][data-event=pong]", 2)
    # the first WebSocket and pusher-js client closed ($disconnect), the second ones are open:
    # two open connections on our WebSocket API (one per dialect)
    page.wait_for_function("document.getElementById('m-open').textContent === '2'",
                           timeout=15_000)
    assert float(page.inner_text("#m-rate")) >= 0
    # the pong, then the new connection's subscription reply, hello and pong: all counted
    _figure_reaches(page, "#m-delivered", delivered + 4, "data-value")

    assert _count(page, "#log li[data-transport=error]") == 0
    assert page.is_hidden("#error")
    problems.assert_none()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page.png"), full_page=True)
    assert (ARTIFACTS / "web-page.png").stat().st_size > 10_000


@pytest.mark.parametrize("server", SERVERS)
def test_pusher_js_panel(stack, browser_page, server):
    """The same steps against soketi and against our WebSocket API, in the page's panel for
    that server: connect, the private channel through our /pusher/auth, presence-lobby with
    its members (one joining from another tab, then leaving), sign-in through our
    /pusher/user-auth, events from the server library on the channel and to the user, and a
    disconnect/connect from the panel's button that subscribes and signs in again."""
    page, problems = browser_page
    panel = _panel(server)
    sub = f"pjs-{server}-{uuid.uuid4().hex[:8]}"
    _open(page, stack)
    assert stack.ports.websocket != stack.ports.soketi
    port = stack.ports.websocket if server == "ours" else stack.ports.soketi
    assert page.inner_text(f"{panel} .address") == \
        f"ws://127.0.0.1:{port}/app/{stack.env['PUSHER_KEY']}"

    page.fill("#sub", sub)
    page.fill("#name", "Panel Person")
    page.click("#signin-button")
    _panel_ready(page, server, sub, "Panel Person")
    assert re.fullmatch(r"\d+\.\d+", page.inner_text(f"{panel} .socket-id"))
    _members_are(page, server, "Panel Person")

    # presence: another person signs in from a second tab, joins, then closes the tab
    second = page.context.new_page()
    problems.watch(second)
    second.goto(stack.web_url)
    second.wait_for_selector("body[data-ready=true]")
    second.fill("#sub", f"{sub}-2")
    second.fill("#name", "Second Person")
    second.click("#signin-button")
    _panel_ready(second, server, f"{sub}-2", "Panel Person")
    _members_are(page, server, "Panel Person, Second Person")
    _arrives(page, f"{_arrived(server, 'member_added')}:has-text('{sub}-2')")
    second.close()
    _members_are(page, server, "Panel Person")
    _arrives(page, f"{_arrived(server, 'member_removed')}:has-text('{sub}-2')")

    # the server library publishes to the private channel and to the signed-in user
    trigger_id = _trigger(page)
    on_channel = _arrives(page, _arrived(server, "library-hello"))
    assert f"private-user-{sub}" in on_channel.inner_text()
    to_user = _arrives(page, _arrived(server, "library-user-hello"))
    assert f"#server-to-user-{sub}" in to_user.inner_text()
    assert trigger_id in on_channel.inner_text() and trigger_id in to_user.inner_text()

    # the panel's button: disconnect, then connect again (subscribes and signs in anew)
    page.click(f"#pusher-{server}-toggle")
    page.wait_for_selector(f"{panel} .status[data-state=disconnected]")
    assert page.inner_text(f"#pusher-{server}-toggle") == "Connect"
    assert page.inner_text(f"{panel} .members") == "—"
    page.click(f"#pusher-{server}-toggle")
    _panel_ready(page, server, sub, "Panel Person", subscriptions=4, signins=2)
    assert page.inner_text(f"#pusher-{server}-toggle") == "Disconnect"
    second_id = _trigger(page, times=2)
    _wait_count(page, _arrived(server, "library-hello"), 2)
    _wait_count(page, _arrived(server, "library-user-hello"), 2)
    assert second_id in page.locator(_arrived(server, "library-hello")).first.inner_text()

    assert _count(page, "#log li[data-transport=error]") == 0
    assert page.is_hidden("#error")
    problems.assert_none()


@pytest.mark.parametrize("content_type, body, status, message", [
    ("text/plain", b'{"user_id": "alice"}', 415, "application/json"),
    ("application/json", b"{", 400, "not JSON"),
    ("application/json", b"[]", 400, "JSON object"),
    ("application/json", b"{}", 400, '"user_id" must be a non-empty string'),
    ("application/json", b'{"user_id": "a|b"}', 400, '"user_id" must be a user id'),
    ("application/json", b'{"user_id": "' + b"a" * 5000 + b'"}', 400, "1..4096 bytes"),
])
def test_dev_trigger_refuses_a_bad_request_with_a_clear_error(stack, content_type, body, status,
                                                              message):
    """The page's server answers POST /dev-trigger's bad input with a JSON error; JSON only, so
    a cross-origin page cannot trigger without a preflight, which it does not answer."""
    answer = requests.post(f"{stack.web_url}dev-trigger", data=body, timeout=10,
                           headers={"Content-Type": content_type})
    assert answer.status_code == status
    assert message in answer.json()["message"]
    assert answer.json()["error"] in ("bad_request", "unsupported_media_type")
    assert requests.post(f"{stack.web_url}elsewhere", json={}, timeout=10).status_code == 404


def test_dev_trigger_names_each_server_it_could_not_reach(tmp_path):
    """Both servers are tried; each failure is named, and the app secret is never shown."""
    ports = Ports.free()  # nothing listens there: no stack is started
    stack = Stack(ports, run_dir=tmp_path)
    stack.env = stage_env(ports)
    status, body = stack.dev_trigger({"user_id": "alice"})
    assert status == 502 and body["error"] == "trigger_failed"
    soketi, ours = body["message"].split("; ")
    assert soketi.startswith("soketi: ConnectionError") and ours.startswith("ours: ConnectionError")
    assert stack.env["PUSHER_SECRET"] not in body["message"]


def _tampered(token: str) -> str:
    """The token with another (well-formed, wrong) signature: it parses, but never verifies."""
    head, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[0] ^= 0xFF
    return f"{head}.{payload}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"


def _path(problem: Problem) -> str:
    return urlsplit(problem.url).path


def test_a_refused_token_is_shown_on_the_page(stack, browser_page):
    page, problems = browser_page
    _open(page, stack)

    # something that is not a JWT at all: refused by the page itself
    _paste_token(page, "not-a-token")
    page.wait_for_selector("#error:visible")
    assert "not a JWT" in page.inner_text("#error")
    assert page.inner_text("#who") == "not signed in"
    assert page.is_disabled("#notify")

    # a JWT whose signature does not verify: every server refuses it, and the page says so
    sub = f"bad-{uuid.uuid4().hex[:8]}"
    _paste_token(page, _tampered(stack.mint(sub)))
    page.wait_for_selector("#ws-status[data-state=refused]")
    ws_error = page.wait_for_selector("#log li[data-transport=error][data-event=websocket]")
    assert "refused" in ws_error.inner_text() and "1006" in ws_error.inner_text()
    auth_error = page.wait_for_selector(
        f"#log li[data-transport=error][data-event='pusher auth']:has-text('private-user-{sub}')")
    assert "HTTP 401" in auth_error.inner_text()
    assert "unauthorized: Unauthorized" in auth_error.inner_text()  # the server's JSON body
    # two channels on each of the two servers, and the user sign-in on each
    _wait_count(page, "#log li[data-transport=error][data-event='pusher auth']", 4)
    _wait_count(page, "#log li[data-transport=error][data-event='pusher user-auth']", 2)
    for server in SERVERS:
        refused = page.locator("#log li[data-transport=error][data-event='pusher auth']"
                               f":has-text('presence-lobby'):has-text('{server}')")
        assert refused.count() == 1
        signin = page.wait_for_selector(
            f"#log li[data-transport=error][data-event='pusher user-auth']:has-text('{server}')")
        assert "HTTP 401" in signin.inner_text()
        assert page.get_attribute(f"{_panel(server)} .user", "data-state") == "refused"
        assert _count(page, _arrived(server, "subscribed")) == 0
    assert page.is_disabled("#ping")

    # "Send me a notification" with that token: API Gateway's authorizer answers 401 before
    # the app runs, without CORS headers, so the browser gives the page no answer to read;
    # the page says what failed and the likely cause
    page.click("#notify")
    notify_error = page.wait_for_selector(
        "#log li[data-transport=error][data-event='POST /notifications']")
    assert "no readable answer" in notify_error.inner_text()
    assert "authorizer" in page.inner_text("#error")
    assert _count(page, HELLO) == 0

    # the failures provoked above, and nothing else
    problems.expect("the 401s of /pusher/auth", lambda p: _path(p) == "/pusher/auth"
                    and p.kind == "http" and p.text == "401", at_least=2)
    problems.expect("the console's 401 for /pusher/auth", lambda p: p.kind == "console"
                    and "401" in p.text and _path(p) == "/pusher/auth", at_least=1)
    problems.expect("the 401s of /pusher/user-auth", lambda p: p.kind == "http"
                    and _path(p) == "/pusher/user-auth" and p.text == "401", at_least=2)
    problems.expect("the console's 401 for /pusher/user-auth", lambda p: p.kind == "console"
                    and "401" in p.text and _path(p) == "/pusher/user-auth", at_least=1)
    problems.expect("the refused WebSocket handshake", lambda p: p.kind == "console"
                    and "WebSocket connection" in p.text and "failed" in p.text
                    and "/dev?token=" in p.text)
    problems.expect("the blocked POST /notifications",
                    lambda p: p.kind == "requestfailed" and _path(p) == "/notifications")
    problems.expect("the console's CORS error", lambda p: p.kind == "console"
                    and "/notifications" in p.text and "CORS" in p.text)
    problems.expect("the console's failed load", lambda p: p.kind == "console"
                    and "net::ERR_FAILED" in p.text and _path(p) == "/notifications", at_least=0)
    problems.expect("the 401 of /notifications", lambda p: p.kind == "http"
                    and _path(p) == "/notifications" and p.text == "401", at_least=0)
    problems.assert_none()


def test_chromium_is_where_the_tests_expect_it():
    """CI must not silently skip the browser test: .ci/run installs Debian's chromium."""
    if not os.environ.get("CI"):
        pytest.skip("only enforced in CI")
    assert shutil.which("chromium") == CHROMIUM
