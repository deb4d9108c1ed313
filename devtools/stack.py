"""``make run``: the whole service on 127.0.0.1, with embedded defaults and nothing to configure.

Parts (each its own process group, its log lines prefixed with its name):

========== ======================================================= ===========================
part       what                                                     default port(s)
========== ======================================================= ===========================
issuer     ``devtools.dev_issuer serve``: OIDC discovery + JWKS     9999
dynamodb   moto server (devtools.moto_registry): DynamoDB + SQS     4567
soketi     Pusher-protocol server (``devtools/soketi``), webhooks    6001 (metrics 9601)
           to ``/pusher/webhooks``
http       ``chalice local --stage dev --no-autoreload``            8000
           (``devtools.chalice_local``: access log redacted, ``;`` kept in paths)
gateway    ``devtools.local_gateway`` (WebSocket API + management   3001, 3002
           API) and the SQS push queue feeding ``push_worker``
web        the demo page (``devtools/web``), served by this process 8080
========== ======================================================= ===========================

The app's settings are the ``dev`` stage of ``.chalice/config.json``, which points at the ports
above. With other ports (``--ports-free``, or the :class:`Stack` API the end-to-end tests use)
the stage's port-bearing settings are rewritten into an overlay project under the run
directory (symlinks to ``app.py`` and ``chalicelib``, a generated ``.chalice/config.json``), so
the same code runs with the same ``--stage dev``.

The functions' metrics (EMF documents on the stdout of ``http`` and ``gateway``) are taken out
of their output and added up by :class:`devtools.live_metrics.LiveMetrics`; the demo page
reads them at ``/metrics.json`` for its live chart.

The demo page runs pusher-js against both Pusher-protocol servers of the stack, soketi and our
own WebSocket API (its Pusher dialect); ``POST /dev-trigger`` of the page's server publishes one
event to both with the Python ``pusher`` library (:meth:`Stack.dev_trigger`).

The stack waits until each part answers, prints the URLs and a ready token, and on Ctrl-C or
SIGTERM stops every process it started (SIGTERM to each process group, SIGKILL after 5 s;
children also get SIGTERM if this process dies, through ``PR_SET_PDEATHSIG``). A lock file in
the run directory (``.run/stack.lock``) makes a second ``make run`` fail with a clear message.
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import json
import mimetypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, fields
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from devtools.chalice_local import redact
from devtools.live_metrics import LiveMetrics
from devtools.loopback import LoopbackHTTPServer

ROOT = Path(__file__).resolve().parent.parent
WEB_DIR = ROOT / "devtools" / "web"
SOKETI_DIR = ROOT / "devtools" / "soketi"
PUSHER_JS = ROOT / "devtools" / "node" / "node_modules" / "pusher-js" / "dist" / "web"
STAGE = "dev"

#: the Pusher-protocol servers of the stack, as the demo page and :meth:`Stack.pusher_library`
#: name them: soketi, and our own WebSocket API (Pusher dialect) with its Pusher HTTP API
PUSHER_SERVERS = ("soketi", "ours")
#: events :meth:`Stack.dev_trigger` publishes: on the user's private channel, and to the user
TRIGGER_EVENT = "library-hello"
TRIGGER_USER_EVENT = "library-user-hello"
#: largest ``POST /dev-trigger`` body the page's server reads, bytes
MAX_TRIGGER_BODY_BYTES = 4096

#: dummy credentials and region for every AWS client of the stack (nothing reaches AWS);
#: set in the children's environment, not in config.json (Lambda reserves these names)
LOCAL_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


class StackError(Exception):
    """The stack could not start; the message says why and what to do."""


@dataclass(frozen=True)
class Ports:
    """TCP ports of the stack, all on 127.0.0.1 (the defaults match the dev stage)."""

    issuer: int = 9999
    dynamodb: int = 4567
    soketi: int = 6001
    soketi_metrics: int = 9601
    soketi_cluster: int = 11002
    http: int = 8000
    websocket: int = 3001
    management: int = 3002
    web: int = 8080

    @classmethod
    def free(cls) -> "Ports":
        """Ports the OS reports free right now (tests: never the fixed defaults)."""
        sockets = []
        try:
            for _ in fields(cls):
                s = socket.socket()
                s.bind(("127.0.0.1", 0))
                sockets.append(s)
            return cls(*[s.getsockname()[1] for s in sockets])
        finally:
            for s in sockets:
                s.close()


def load_config(project_dir: Path = ROOT) -> dict:
    return json.loads((project_dir / ".chalice" / "config.json").read_text())


def stage_env(ports: Ports, config: Optional[dict] = None) -> Dict[str, str]:
    """The dev stage's environment variables with every local address derived from ``ports``.

    With the default :class:`Ports` the result equals the dev stage of ``.chalice/config.json``
    (a test checks it), so ``make run`` uses that file unchanged.
    """
    env = dict((config or load_config())["stages"][STAGE]["environment_variables"])
    issuer = f"http://127.0.0.1:{ports.issuer}"
    env.update({
        "JWT_ISSUER": issuer,
        "JWT_ISSUER_JWKS_URI": f"{issuer}/.well-known/jwks.json",
        "PUSHER_HOST": "127.0.0.1",
        "PUSHER_PORT": str(ports.soketi),
        "PUSHER_SSL": "false",
        "WEBSOCKET_ENDPOINT_URL": f"http://127.0.0.1:{ports.management}/{STAGE}",
        "AWS_ENDPOINT_URL_DYNAMODB": f"http://127.0.0.1:{ports.dynamodb}",
        "AWS_ENDPOINT_URL_SQS": f"http://127.0.0.1:{ports.dynamodb}",
        # the gateway's management port also answers Lambda Invoke (pusher_hello)
        "AWS_ENDPOINT_URL_LAMBDA": f"http://127.0.0.1:{ports.management}",
    })
    return env


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


try:  # resolved here, not in the forked child (no dlopen between fork and exec)
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _PRCTL = None


def _set_pdeathsig() -> None:
    """Runs in the child between fork and exec: SIGTERM it when the stack dies."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Part:
    """One child process: started in its own process group, output prefixed line by line."""

    def __init__(self, name: str, argv: List[str], env: Dict[str, str], cwd: Path,
                 out: Callable[[str], None], ready: Callable[[], bool]):
        self.name, self.argv, self.env, self.cwd = name, argv, env, cwd
        self.out, self.ready = out, ready
        self.proc: Optional[subprocess.Popen] = None
        #: lines matching this are kept out of the console (still in ``tail``)
        self.quiet: Optional["re.Pattern[str]"] = None
        #: sees every line first; a line it takes (returns True for) is neither shown nor kept
        #: (the functions' EMF documents, counted by :class:`devtools.live_metrics.LiveMetrics`)
        self.on_line: Optional[Callable[[str], bool]] = None
        self.tail: deque = deque(maxlen=30)
        self._reader: Optional[threading.Thread] = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_set_pdeathsig)
        self._reader = threading.Thread(target=self._pump, name=f"log-{self.name}",
                                        daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            # no part's line shows a token or a signature from a query string
            line = redact(raw.decode("utf-8", "replace").rstrip())
            if self.on_line is not None and self.on_line(line):
                continue
            self.tail.append(line)
            if self.quiet is None or not self.quiet.search(line):
                self.out(f"{self.name:>8} | {line}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the group id is the child's pid
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                # the leader is gone; make sure nothing else of its group lingers
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
            break
        if self._reader is not None:
            self._reader.join(2)


def _http_answers(url: str, expect: Optional[Callable[[int, bytes], bool]] = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    except (OSError, ValueError):
        return False
    return expect(status, body) if expect else True


class Stack:
    """The local stack. ``start()`` returns when every part answers; ``stop()`` stops them.

    Args:
        ports: :class:`Ports` (defaults: the dev stage's fixed ports).
        run_dir: lock file, overlay project and soketi config live here (default ``.run/``).
        out: where prefixed log lines go (default: print).
        gateway_args: extra ``devtools.local_gateway`` arguments (``--post-latency 0.02``...).
        start_timeout: seconds each part may take to answer.
    """

    def __init__(self, ports: Ports = Ports(), run_dir: Path = ROOT / ".run",
                 out: Optional[Callable[[str], None]] = None,
                 gateway_args: Optional[List[str]] = None, start_timeout: float = 60.0):
        self.ports = ports
        self.run_dir = Path(run_dir)
        self.out = out or (lambda line: print(line, flush=True))
        self.gateway_args = list(gateway_args or [])
        self.start_timeout = start_timeout
        self.parts: List[Part] = []
        self.env: Dict[str, str] = {}
        self._lock_file = None
        self._web: Optional[LoopbackHTTPServer] = None
        self._issuer = None
        #: the figures the functions emit (EMF on the stdout of ``http`` and ``gateway``)
        self.metrics = LiveMetrics()

    # -- addresses -----------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    @property
    def websocket_url(self) -> str:
        return f"ws://127.0.0.1:{self.ports.websocket}/{STAGE}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.management}/{STAGE}"

    @property
    def dynamodb_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.dynamodb}"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.web}/"

    @property
    def issuer_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.issuer}"

    def mint(self, sub: str, **claims) -> str:
        """A token from the stack's dev issuer (``audience`` and ``iss`` of the dev stage)."""
        return self._issuer.mint(sub, **claims)

    # -- lifecycle -----------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / "stack.lock"
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            pid = handle.read().strip() or "?"
            handle.close()
            raise StackError(
                f"another local stack is already running (pid {pid}, lock {path}).\n"
                f"Stop it with Ctrl-C in its terminal (or `kill {pid}`), then run again."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle

    def _check_ports(self) -> None:
        busy = [f"{port} ({name})" for name, port in
                ((f.name, getattr(self.ports, f.name)) for f in fields(self.ports))
                if name != "soketi_cluster" and _port_in_use(port)]
        if busy:
            raise StackError("port(s) already in use on 127.0.0.1: " + ", ".join(busy)
                             + ".\nStop whatever holds them (another stack? "
                               "`ss -ltnp` shows who) and run again.")

    def _project_dir(self, env: Dict[str, str]) -> Path:
        """The project ``chalice local`` and the gateway load: the repository itself when
        the dev stage already has these addresses, else an overlay with a rewritten stage."""
        config = load_config()
        if config["stages"][STAGE]["environment_variables"] == env:
            return ROOT
        project = self.run_dir / "project"
        if project.exists():
            shutil.rmtree(project)
        (project / ".chalice").mkdir(parents=True)
        for name in ("app.py", "chalicelib", "requirements.txt"):
            if (ROOT / name).exists():
                (project / name).symlink_to(ROOT / name)
        config["stages"][STAGE]["environment_variables"] = env
        (project / ".chalice" / "config.json").write_text(json.dumps(config, indent=2))
        return project

    def start(self) -> "Stack":
        """Start every part and wait until each answers.

        Raises:
            StackError: another stack holds the lock, a port is taken, or a part did not
                answer within ``start_timeout`` (its last log lines are in the message).
        """
        from devtools.dev_issuer import DevIssuer

        self._acquire_lock()
        try:
            self._check_ports()
            self._issuer = DevIssuer(port=self.ports.issuer)  # keys exist before any child
            self.env = stage_env(self.ports)
            project = self._project_dir(self.env)
            child_env = {k: v for k, v in os.environ.items()
                         if not k.startswith(("AWS_", "SOKETI_"))}
            child_env.update(LOCAL_AWS_ENV)
            child_env.update({k: v for k, v in self.env.items() if k.startswith("AWS_")})
            child_env["PYTHONUNBUFFERED"] = "1"
            child_env["PYTHONPATH"] = str(ROOT)
            self._define_parts(project, child_env)
            for part in self.parts:
                part.start()
            self._wait_ready()
            self._create_tables(child_env)
            self._start_web()
        except BaseException:
            self.stop()
            raise
        return self

    def _define_parts(self, project: Path, env: Dict[str, str]) -> None:
        py, p, e = sys.executable, self.ports, self.env
        soketi_config = self.run_dir / "soketi.json"
        config = json.loads((SOKETI_DIR / "soketi.json").read_text())
        config.update({"port": p.soketi, "metrics.port": p.soketi_metrics,
                       "cluster.port": p.soketi_cluster})
        soketi_config.write_text(json.dumps(config, indent=2))
        soketi_env = dict(env, **{
            "SOKETI_DEFAULT_APP_ID": e["PUSHER_APP_ID"],
            "SOKETI_DEFAULT_APP_KEY": e["PUSHER_KEY"],
            "SOKETI_DEFAULT_APP_SECRET": e["PUSHER_SECRET"],
            "SOKETI_DEFAULT_APP_USER_AUTHENTICATION": "true",
            # client events as ours serve them: on, at CLIENT_EVENT_RATE_LIMIT (default 10,
            # Pusher's limit) per connection per second (tests/conformance compares the two)
            "SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES": "true",
            "SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC": e.get("CLIENT_EVENT_RATE_LIMIT",
                                                                  "10"),
            "SOKETI_SHUTDOWN_GRACE_PERIOD": "500",
            "SOKETI_DEFAULT_APP_WEBHOOKS": json.dumps([{
                "url": f"{self.http_url}/pusher/webhooks",
                "event_types": ["channel_occupied", "channel_vacated", "member_added",
                                "member_removed"]}]),
        })
        self.parts = [
            Part("issuer", [py, "-m", "devtools.dev_issuer", "serve", "--port", str(p.issuer)],
                 env, ROOT, self.out,
                 lambda: _http_answers(f"{self.issuer_url}/.well-known/openid-configuration",
                                       lambda s, _: s == 200)),
            self._quiet(Part("dynamodb", [py, "-m", "devtools.moto_registry", "-H",
                                          "127.0.0.1", "-p", str(p.dynamodb)], env, ROOT,
                             self.out,
                             lambda: _http_answers(f"{self.dynamodb_url}/moto-api/")),
                        # moto logs every request (SQS long polls: one a second) as "POST / 200"
                        r'"(GET|POST) /\S* HTTP/1\.1" 2\d\d'),
            Part("soketi", ["node", str(SOKETI_DIR / "node_modules" / ".bin" / "soketi"),
                            "start", f"--config={soketi_config}"], soketi_env, SOKETI_DIR,
                 self.out,
                 lambda: _http_answers(f"http://127.0.0.1:{p.soketi}/ready",
                                       lambda s, _: s == 200)),
            Part("http", [py, "-m", "devtools.chalice_local", "--project-dir", str(project),
                          "local",
                          "--host", "127.0.0.1", "--port", str(p.http), "--stage", STAGE,
                          "--no-autoreload"], env, ROOT, self.out,
                 lambda: _http_answers(f"{self.http_url}/me")),
            Part("gateway", [py, "-m", "devtools.local_gateway", "--project-dir", str(project),
                             "--stage", STAGE, "--port", str(p.websocket),
                             "--management-port", str(p.management), "--sqs",
                             *self.gateway_args], env, ROOT, self.out,
                 lambda: _http_answers(f"{self.management_url}/@connections/probe",
                                       lambda s, _: s == 410) and self._gateway_says_ready()),
        ]
        for part in self.parts:
            if part.name in ("http", "gateway"):  # where the functions run
                part.on_line = self.metrics.feed_line

    @staticmethod
    def _quiet(part: Part, pattern: str) -> Part:
        part.quiet = re.compile(pattern)
        return part

    def _gateway_says_ready(self) -> bool:
        gateway = next(part for part in self.parts if part.name == "gateway")
        return any(line.startswith("local gateway ready") for line in gateway.tail)

    def _wait_ready(self) -> None:
        pending = list(self.parts)
        deadline = time.monotonic() + self.start_timeout
        while pending:
            for part in list(pending):
                if not part.running():
                    raise StackError(f"{part.name} exited with status {part.proc.returncode} "
                                     "while starting; its last lines:\n  "
                                     + "\n  ".join(part.tail))
                if part.ready():
                    pending.remove(part)
            if pending and time.monotonic() > deadline:
                raise StackError("not answering after {:.0f} s: {}".format(
                    self.start_timeout, ", ".join(p.name for p in pending)))
            time.sleep(0.1)

    def _create_tables(self, env: Dict[str, str]) -> None:
        """Create the registry table (``chalicelib.registry.table.TABLE_SCHEMA``) in moto."""
        import boto3

        from chalicelib.registry import table

        client = boto3.session.Session().client(
            "dynamodb", region_name=env["AWS_DEFAULT_REGION"], endpoint_url=self.dynamodb_url,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
        table.create_table(self.env["CONNECTIONS_TABLE"], client=client)

    def stop(self) -> None:
        """Stop every part (reverse order) and release the ports and the lock."""
        if self._web is not None:
            self._web.stop()
            self._web = None
        for part in reversed(self.parts):
            part.stop()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the demo page -------------------------------------------------------------------
    def web_config(self) -> dict:
        """What the page needs: endpoints and the public Pusher settings.

        Returns:
            ``{"httpUrl", "websocketUrl", "pusherServers": {"soketi": S, "ours": S}}``, each
            ``S`` = ``{"key", "host", "port", "cluster"}`` as pusher-js takes them (``wsHost``,
            ``wsPort``; pusher-js appends ``/app/<key>``): soketi's port, or the local
            gateway's WebSocket port, which serves ``/app/<key>`` in the Pusher dialect.
        """
        def server(port: int) -> dict:
            return {"key": self.env["PUSHER_KEY"], "host": "127.0.0.1", "port": port,
                    "cluster": self.env.get("PUSHER_CLUSTER", "mt1")}

        return {"httpUrl": self.http_url, "websocketUrl": self.websocket_url,
                "pusherServers": {"soketi": server(self.ports.soketi),
                                  "ours": server(self.ports.websocket)}}

    def pusher_library(self, server: str):
        """The Python ``pusher`` library as an app configures it for one of the stack's
        servers; only host and port differ.

        Args:
            server: ``"soketi"`` (soketi's own HTTP API) or ``"ours"`` (our Pusher HTTP API,
                ``/apps/<app_id>/…`` on ``chalice local``).
        Returns:
            a ``pusher.Pusher`` (plain http on 127.0.0.1, 10 s timeout).
        Raises:
            ValueError: an unknown server name.
        """
        import pusher

        if server not in PUSHER_SERVERS:
            raise ValueError(f"unknown Pusher server {server!r}: one of {PUSHER_SERVERS}")
        e = self.env
        port = self.ports.soketi if server == "soketi" else self.ports.http
        return pusher.Pusher(app_id=e["PUSHER_APP_ID"], key=e["PUSHER_KEY"],
                             secret=e["PUSHER_SECRET"], host="127.0.0.1", port=port,
                             ssl=False, timeout=10)

    def dev_trigger(self, body: Any) -> Tuple[int, Dict[str, Any]]:
        """``POST /dev-trigger`` of the demo page: publish the same event with the ``pusher``
        library to soketi and to our Pusher HTTP API — :data:`TRIGGER_EVENT` on
        ``private-user-<user_id>`` (``trigger``) and :data:`TRIGGER_USER_EVENT` to the user
        (``send_to_user``, Pusher's ``#server-to-user-<user_id>``). The page cannot: the app
        secret stays in this process.

        Args:
            body: the parsed JSON body, ``{"user_id": <user id>}`` (docs/auth.md, "User ids").
        Returns:
            ``(status, body)``: 200 ``{"id", "event", "channel", "user_event", "user_id",
            "servers": {"soketi": "triggered", "ours": "triggered"}}`` (``id``: 8 hex digits,
            also in the events' data); 400 ``{"error", "message"}`` for a body that is not an
            object with a well-formed user id; 502 ``{"error": "trigger_failed", "message"}``
            naming each server the library could not publish to, and why (both are tried).
        """
        from chalicelib.errors import AppError
        from chalicelib.auth.principal import validate_user_id

        if not isinstance(body, dict):
            return 400, {"error": "bad_request", "message": "the body must be a JSON object"}
        try:
            user_id = validate_user_id(body.get("user_id"))
        except AppError as err:
            return err.status, err.body()
        trigger_id = uuid.uuid4().hex[:8]
        data = {"id": trigger_id, "from": "the pusher library",
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        channel = f"private-user-{user_id}"
        outcomes, failures = {}, []
        for server in PUSHER_SERVERS:
            try:
                library = self.pusher_library(server)
                library.trigger(channel, TRIGGER_EVENT, data)
                library.send_to_user(user_id, TRIGGER_USER_EVENT, data)
                outcomes[server] = "triggered"
            except Exception as exc:  # the library's HTTP errors, refused connections...
                outcomes[server] = "failed"
                failures.append(f"{server}: {type(exc).__name__}: {str(exc)[:200]}")
        if failures:
            return 502, {"error": "trigger_failed", "message": "; ".join(failures)}
        return 200, {"id": trigger_id, "event": TRIGGER_EVENT, "channel": channel,
                     "user_event": TRIGGER_USER_EVENT, "user_id": user_id,
                     "servers": outcomes}

    def _start_web(self) -> None:
        stack = self
        files = {"/": WEB_DIR / "index.html", "/app.js": WEB_DIR / "app.js",
                 "/style.css": WEB_DIR / "style.css",
                 "/vendor/pusher.min.js": PUSHER_JS / "pusher.min.js"}

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                url = urlsplit(self.path)
                if url.path == "/config.json":
                    body = json.dumps(stack.web_config()).encode()
                    return self._send(200, body, "application/json")
                if url.path == "/metrics.json":
                    body = json.dumps(stack.metrics.snapshot()).encode()
                    return self._send(200, body, "application/json")
                if url.path == "/dev-token":
                    query = parse_qs(url.query)
                    sub = (query.get("sub") or ["alice"])[0][:64]
                    name = (query.get("name") or [sub.title()])[0][:64]
                    body = json.dumps({"token": stack.mint(sub, name=name)}).encode()
                    return self._send(200, body, "application/json")
                path = files.get(url.path)
                if path is None or not path.exists():
                    return self._send(404, b"not found", "text/plain")
                ctype = mimetypes.guess_type(str(path))[0] or "application/octet-stream"
                self._send(200, path.read_bytes(), ctype)

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                if urlsplit(self.path).path != "/dev-trigger":
                    return self._send(404, b"not found", "text/plain")
                status, answer = self._trigger()
                self._send(status, json.dumps(answer).encode(), "application/json")

            def _trigger(self) -> Tuple[int, Dict[str, Any]]:
                # JSON only: a cross-origin page cannot send it without a preflight (not
                # answered here), so only this page's own script triggers
                ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                if ctype != "application/json":
                    return 415, {"error": "unsupported_media_type",
                                 "message": "the body must be application/json"}
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if not 0 < length <= MAX_TRIGGER_BODY_BYTES:
                    return 400, {"error": "bad_request", "message": "a JSON body of 1.."
                                 f"{MAX_TRIGGER_BODY_BYTES} bytes with a Content-Length"}
                try:
                    body = json.loads(self.rfile.read(length))
                except ValueError:
                    return 400, {"error": "bad_request", "message": "the body is not JSON"}
                return stack.dev_trigger(body)

            def log_message(self, *args) -> None:
                pass

        self._web = LoopbackHTTPServer(Handler, self.ports.web).start(name="web")

    def banner(self, token: str) -> str:
        e = self.env
        return "\n".join([
            "",
            "local stack ready (Ctrl-C stops everything):",
            f"  demo page        {self.web_url}   (pusher-js against soketi and against"
            " our WebSocket API, side by side)",
            f"  HTTP API         {self.http_url}   (chalice local --stage {STAGE})",
            f"  WebSocket        {self.websocket_url}?token=$TOKEN",
            f"  management API   {self.management_url}/@connections/{{id}}",
            f"  Pusher (soketi)  ws://127.0.0.1:{self.ports.soketi}/app/{e['PUSHER_KEY']}"
            f"  (app id {e['PUSHER_APP_ID']})",
            f"  DynamoDB + SQS   {self.dynamodb_url}   (moto; table {e['CONNECTIONS_TABLE']},"
            f" queue {e['PUSH_QUEUE_NAME']})",
            f"  issuer           {self.issuer_url}",
            "",
            "a token for alice (1 h; `make token SUB=bob` for others):",
            f"  export TOKEN={token}",
            "  .venv/bin/python -m devtools.client --token $TOKEN",
            "",
            "pusher-js against our own WebSocket API (Pusher protocol 7; no soketi involved):",
            *("  " + line for line in self.pusher_js_config().splitlines()),
            "",
        ])

    def pusher_js_config(self) -> str:
        """A ready pusher-js 8 configuration for the local gateway (docs/pusher-dialect.md; the
        README's quick start shows it): pusher-js appends ``/app/<key>`` to ``wsHost:wsPort``
        itself."""
        e = self.env
        auth = "{ Authorization: `Bearer ${TOKEN}` }"
        return "\n".join([
            f"const pusher = new Pusher('{e['PUSHER_KEY']}', {{",
            f"  cluster: 'mt1', wsHost: '127.0.0.1', wsPort: {self.ports.websocket},"
            " forceTLS: false,",
            "  enabledTransports: ['ws'], disableStats: true,",
            f"  channelAuthorization: {{ endpoint: '{self.http_url}/pusher/auth',"
            f" headers: {auth} }},",
            f"  userAuthentication: {{ endpoint: '{self.http_url}/pusher/user-auth',"
            f" headers: {auth} }},",
            "});",
        ])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.stack",
                                     description="Run the whole service on 127.0.0.1.")
    parser.add_argument("--ports-free", action="store_true",
                        help="pick free ports instead of the dev stage's fixed ones")
    parser.add_argument("--post-latency", type=float, default=0.0,
                        help="seconds the management API waits per call (benchmarks)")
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run",
                        help="lock file and generated files (default .run/)")
    args = parser.parse_args(argv)

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    ports = Ports.free() if args.ports_free else Ports()
    gateway_args = ["--post-latency", str(args.post_latency)] if args.post_latency else []
    stack = Stack(ports, run_dir=args.run_dir, gateway_args=gateway_args)
    try:
        stack.start()
        print(stack.banner(stack.mint("alice", name="Alice")), flush=True)
        while all(part.running() for part in stack.parts):
            time.sleep(0.5)
        dead = [part.name for part in stack.parts if not part.running()]
        print(f"stack: {', '.join(dead)} stopped unexpectedly; stopping the rest",
              file=sys.stderr)
        return 1
    except StackError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()


if __name__ == "__main__":
    raise SystemExit(main())
