"""README.md's pusher-js quick start, run as it is printed there.

The blocks marked ``<!-- quickstart:pusher-js -->`` (``hello.js``), ``pusher-run`` (the command
that runs it) and ``pusher-trigger`` (the server-side trigger through our Pusher HTTP API) are
taken from README.md and run against the local stack: pusher-js (devtools/node) connects to our
own WebSocket API in its Pusher dialect, subscribes to a private channel through our
``/pusher/auth``, and must print the event the Python ``pusher`` library triggers.

Ports: the stack here runs on free ports (so it never collides with a developer's ``make run``
or another test's stack), so the blocks' port numbers, the ones ``make run`` uses, are the one
thing changed: the pusher-js options ``make run`` prints for its default ports are replaced by
the ones this stack prints, and the trigger's ``port=8000`` by this stack's HTTP port.
``test_the_readme_blocks_are_what_make_run_prints`` checks that the printed blocks hold exactly
what ``make run`` prints on its default ports.
"""
from __future__ import annotations

import os
import queue
import re
import subprocess
import threading

import pytest

from devtools.stack import ROOT, Ports, Stack, stage_env
from tests.support.local_stack import running_stack

pytestmark = pytest.mark.e2e

BLOCK = re.compile(r"<!-- quickstart:(?P<name>[\w-]+) -->\n```(?P<lang>\w+)\n(?P<body>.*?)\n```\n",
                   re.S)
USER = "alice"  # the user make run prints a token for, and the README's channel
GREETING = 'greeting {"text":"hello from our Pusher HTTP API"}'


def quickstart_blocks() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = {m["name"]: (m["lang"], m["body"] + "\n") for m in BLOCK.finditer(text)}
    assert set(blocks) == {"pusher-js", "pusher-run", "pusher-trigger"}, sorted(blocks)
    assert blocks["pusher-js"][0] == "js" and blocks["pusher-run"][0] == "sh" \
        and blocks["pusher-trigger"][0] == "sh"
    return {name: body for name, (lang, body) in blocks.items()}


def make_run_pusher_js_config() -> str:
    """The pusher-js options `make run` prints (default ports, the dev stage's app key)."""
    printed = Stack(Ports())
    printed.env = stage_env(Ports())
    return printed.pusher_js_config()


def test_the_readme_blocks_are_what_make_run_prints():
    blocks = quickstart_blocks()
    assert make_run_pusher_js_config() in blocks["pusher-js"]
    env = stage_env(Ports())
    trigger = blocks["pusher-trigger"]
    for value in (env["PUSHER_APP_ID"], env["PUSHER_KEY"], env["PUSHER_SECRET"]):
        assert f"'{value}'" in trigger
    assert f"port={Ports().http}," in trigger
    assert f"private-user-{USER}" in blocks["pusher-js"] and f"private-user-{USER}" in trigger


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("readme-stack-run")) as running:
        yield running


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line.rstrip("\n"))
    into.put(None)


def _next_line(lines: queue.Queue, seconds: float, what: str, proc, errors) -> str:
    try:
        line = lines.get(timeout=seconds)
    except queue.Empty:
        pytest.fail(f"hello.js printed no {what} within {seconds} s; stderr: {''.join(errors)}")
    assert line is not None, f"hello.js ended (status {proc.wait()}) before {what}: " \
                             + "".join(errors)
    return line


def test_the_pusher_js_quick_start_runs_as_printed(stack, tmp_path):
    assert (ROOT / "devtools" / "node" / "node_modules" / "pusher-js").is_dir(), "make node"
    blocks = quickstart_blocks()
    default_config = make_run_pusher_js_config()
    # the one change: this stack's ports instead of make run's (see the module's docstring)
    hello = blocks["pusher-js"].replace(default_config, stack.pusher_js_config())
    trigger = blocks["pusher-trigger"].replace(f"port={Ports().http},",
                                               f"port={stack.ports.http},")
    assert hello != blocks["pusher-js"] and trigger != blocks["pusher-trigger"]
    # a working directory laid out as the repository's root, where the README has the user
    # save hello.js: devtools/ (pusher-js) and .venv/ (the pusher library) beside it
    (tmp_path / "hello.js").write_text(hello, encoding="utf-8")
    (tmp_path / "devtools").symlink_to(ROOT / "devtools")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    env = {key: value for key, value in os.environ.items() if key != "NODE_PATH"}
    env["TOKEN"] = stack.mint(USER, name="Alice")  # what `make run` prints / `make token` mints

    node = subprocess.Popen(["bash", "-c", blocks["pusher-run"]], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    errors: list = []
    threading.Thread(target=_lines, args=(node.stdout, lines), daemon=True).start()
    threading.Thread(target=lambda: errors.extend(node.stderr), daemon=True).start()
    try:
        assert _next_line(lines, 60, "subscription", node, errors) == \
            f"subscribed to private-user-{USER}"
        published = subprocess.run(["bash", "-c", trigger], cwd=tmp_path, env=env,
                                   capture_output=True, text=True, timeout=60)
        assert published.returncode == 0, published.stdout + published.stderr
        assert _next_line(lines, 30, "greeting", node, errors) == GREETING
        assert node.wait(timeout=30) == 0, "".join(errors)  # pusher.disconnect(): it ends
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
