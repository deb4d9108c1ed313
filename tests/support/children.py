"""Child Python processes that serve until their stdin closes (queue processes, benchmark
stand-ins): one way to start them, read the first line they print, and stop them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[2]


def start(argv: List[str], *, env: Optional[Dict[str, str]] = None, cpu: Optional[str] = None,
          expect: str = "") -> Tuple[subprocess.Popen, str]:
    """Start ``python *argv`` from the project root in its own session (pinned to ``cpu`` with
    ``taskset`` when given).

    Returns:
        ``(process, the first line it printed)``.
    Raises:
        RuntimeError: it printed nothing, or a first line not starting with ``expect`` (it is
            stopped first).
    """
    command = [sys.executable, *argv]
    if cpu is not None:
        command = ["taskset", "-c", cpu, *command]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    line = process.stdout.readline().strip()
    if not line or not line.startswith(expect):
        stop(process)
        raise RuntimeError(f"{' '.join(argv)} did not start")
    return process, line


def stop(process: subprocess.Popen, timeout: float = 10) -> None:
    """Close its stdin and wait for it; kill its process group after ``timeout`` seconds."""
    try:
        process.stdin.close()
    except OSError:
        pass
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()
