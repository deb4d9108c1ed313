"""The local stack (devtools.stack) for end-to-end tests: free ports, its own run directory,
logs kept for failure messages."""
from __future__ import annotations

import contextlib
from collections import deque
from pathlib import Path
from typing import Iterator

import pytest

from devtools.stack import Ports, Stack, StackError


@contextlib.contextmanager
def running_stack(run_dir: Path, **kwargs) -> Iterator[Stack]:
    """Start the stack on free ports (one retry if a port was taken meanwhile), yield it,
    stop it. ``stack.logs`` holds its last log lines."""
    logs: deque = deque(maxlen=500)
    stack = None
    for attempt in range(2):
        stack = Stack(Ports.free(), run_dir=run_dir, out=logs.append, **kwargs)
        try:
            stack.start()
            break
        except StackError as exc:
            if attempt == 1 or "already in use" not in str(exc):
                pytest.fail(f"local stack did not start: {exc}\n" + "\n".join(logs))
    stack.logs = logs
    try:
        yield stack
    finally:
        stack.stop()
