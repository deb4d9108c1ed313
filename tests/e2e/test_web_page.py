"""The demo page of the local stack in headless Chromium (Debian's /usr/bin/chromium driven by
Playwright): sign in with a dev token, receive a push over the API Gateway WebSocket and an
event over Pusher (soketi). A screenshot is saved to artifacts/web-page.png."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pusher
import pytest
import requests

from tests.support.local_stack import running_stack

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


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


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=_chromium_or_skip(),
            headless=True, args=CHROMIUM_ARGS, viewport={"width": 1100, "height": 900})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(20_000)
            yield page
        finally:
            context.close()


def test_page_receives_a_websocket_push_and_a_pusher_event(stack, page):
    sub = f"web-{uuid.uuid4().hex[:8]}"
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(stack.web_url)
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#sub", sub)
    page.fill("#name", "Web Tester")
    page.click("#signin-button")

    page.wait_for_selector("#ws-status[data-state=open]")
    page.wait_for_selector('#log li[data-transport=websocket][data-event=subscribed]')
    page.wait_for_selector("#pusher-status[data-state=connected]")
    page.wait_for_function(
        "document.querySelectorAll('#log li[data-transport=pusher][data-event=subscribed]')"
        ".length === 2")
    assert "Web Tester" in page.inner_text("#members")  # presence member from our user-info

    # a WebSocket push: POST /notifications to the signed-in user, as another part would
    response = requests.post(
        f"{stack.http_url}/notifications", timeout=30,
        json={"user_id": sub, "event": "ws-hello", "data": {"via": "api-gateway"}},
        headers={"Authorization": f"Bearer {stack.mint(sub)}"})
    assert response.status_code == 200, response.text
    ws_item = page.wait_for_selector('#log li[data-transport=websocket][data-event=ws-hello]')
    assert "api-gateway" in ws_item.inner_text()

    # a Pusher event: the server library triggers on the user's private channel in soketi
    env = stack.env
    client = pusher.Pusher(app_id=env["PUSHER_APP_ID"], key=env["PUSHER_KEY"],
                           secret=env["PUSHER_SECRET"], host="127.0.0.1",
                           port=int(env["PUSHER_PORT"]), ssl=False)
    client.trigger(f"private-user-{sub}", "pusher-hello", {"via": "soketi"})
    pusher_item = page.wait_for_selector(
        '#log li[data-transport=pusher][data-event=pusher-hello]')
    assert "soketi" in pusher_item.inner_text()

    assert page.locator("#log li[data-transport=error]").count() == 0
    assert errors == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page.png"), full_page=True)
    assert (ARTIFACTS / "web-page.png").stat().st_size > 10_000


def test_chromium_is_where_the_tests_expect_it():
    """CI must not silently skip the browser test: .ci/run installs Debian's chromium."""
    if not os.environ.get("CI"):
        pytest.skip("only enforced in CI")
    assert shutil.which("chromium") == CHROMIUM
