"""The demo page of the local stack in headless Chromium (Debian's /usr/bin/chromium driven by
Playwright), used the way a person uses it: every button is pressed, what the page shows is
asserted, and any console error, page error, failed request or HTTP error the test did not
provoke on purpose fails the test. A screenshot is saved to artifacts/web-page.png."""
from __future__ import annotations

import base64
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List
from urllib.parse import urlsplit

import pusher
import pytest

from tests.support.local_stack import running_stack

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: every button of devtools/web/index.html; the tests press each one
BUTTONS = {"signin-button", "token-button", "notify", "ping"}


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


@pytest.fixture
def browser_page(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=_chromium_or_skip(),
            headless=True, args=CHROMIUM_ARGS, viewport={"width": 1100, "height": 900})
        try:
            page = context.pages[0] if context.pages else context.new_page()
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
PUSHER_SUBSCRIBED = "#log li[data-transport=pusher][data-event=subscribed]"
HELLO = "#log li[data-transport=websocket][data-event=hello]"


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
    page.wait_for_selector("#pusher-status[data-state=connected]")
    _wait_count(page, PUSHER_SUBSCRIBED, 2)
    assert page.inner_text("#who") == f"signed in as {sub}"
    assert "Web Tester" in page.inner_text("#members")  # presence member from our user-info
    # the live panel: the $connect's ConnectionsOpened, and the subscription's reply delivered
    _figure_reaches(page, "#chart", 1, "data-open")
    assert _figure(page, "#m-open") >= 1
    _figure_reaches(page, "#m-delivered", 1, "data-value")
    _figure_reaches(page, "#chart", 1, "data-peak")  # a bar on the chart
    delivered = _figure(page, "#m-delivered", "data-value")
    allowed = int(page.inner_text("#m-auth").split("/")[0])
    assert allowed >= 1  # ws_authorizer's figure... or jwt_auth's: both count

    # 2. "Send me a notification": the browser's own POST (CORS preflight included) and the
    #    push arriving over the API Gateway WebSocket
    page.click("#notify")
    answer = _arrives(page, "#log li[data-transport=http][data-event='POST /notifications']")
    hello = _arrives(page, HELLO)
    assert "demo page" in hello.inner_text()
    assert "HTTP 200" in answer.inner_text() and "delivered 1" in answer.inner_text()
    _figure_reaches(page, "#m-delivered", delivered + 1, "data-value")  # the chart moved
    delivered = _figure(page, "#m-delivered", "data-value")

    # 3. "Ping over the WebSocket"
    page.click("#ping")
    _arrives(page, "#log li[data-transport=websocket][data-event=pong]")
    _figure_reaches(page, "#m-delivered", delivered + 1, "data-value")  # the pong

    # 4. a Pusher event: the server library triggers on the user's private channel in soketi
    env = stack.env
    client = pusher.Pusher(app_id=env["PUSHER_APP_ID"], key=env["PUSHER_KEY"],
                           secret=env["PUSHER_SECRET"], host="127.0.0.1",
                           port=int(env["PUSHER_PORT"]), ssl=False)
    client.trigger(f"private-user-{sub}", "pusher-hello", {"via": "soketi"})
    pusher_item = page.wait_for_selector('#log li[data-transport=pusher][data-event=pusher-hello]')
    assert "soketi" in pusher_item.inner_text()

    # 5. "Connect with this token": a pasted (valid) token for another user replaces the first;
    #    an Auth0 subject, whose user id escapes the "|" (README, "User ids")
    other = f"auth0|web-{uuid.uuid4().hex[:8]}"
    other_user_id = other.replace("|", "=7C")
    _paste_token(page, stack.mint(other, name="Pasted Person"))
    page.wait_for_selector(f"#who:text-is('signed in as {other}')")
    page.wait_for_selector(f"{WS_SUBSCRIBED}:has-text('private-user-{other_user_id}')")
    page.wait_for_selector("#ws-status[data-state=open]")
    _wait_count(page, PUSHER_SUBSCRIBED, 4)
    page.wait_for_function("document.getElementById('members').textContent"
                           ".includes('Pasted Person')")
    page.click("#notify")
    _wait_count(page, HELLO, 2)
    page.click("#ping")
    _wait_count(page, "#log li[data-transport=websocket][data-event=pong]", 2)
    # the first WebSocket closed ($disconnect), the second is open: one open connection
    page.wait_for_function("document.getElementById('m-open').textContent === '1'",
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
    _wait_count(page, "#log li[data-transport=error][data-event='pusher auth']", 2)
    assert "presence-lobby" in page.inner_text("#log")
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
