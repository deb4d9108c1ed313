"""ministack, the AWS emulator of the deploy suite: start it on a free loopback port from its own
virtual environment (``.venv-ministack/``, ``make ministack-venv``), deploy ``make package``'s
output through its CloudFormation, stop it with every function worker it started.

The deployment is what a user does on AWS (docs/deploy.md, 3b): upload the zip and the template
to S3 (``aws cloudformation package``; the template is over CloudFormation's 51,200-byte
``TemplateBody`` limit, so it goes by ``TemplateURL`` as ``aws cloudformation deploy
--s3-bucket`` sends it), then ``CreateStack`` with the SAM transform. Two things differ, both
named: the stage's settings that say where things are (:func:`stage_settings`: the dev issuer's
address; no ``make run`` endpoints), and the emulator's gaps (:mod:`tests.deploy.ministack_gaps`).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from tests.deploy import ministack_gaps as gaps

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-ministack"
REGION = "us-east-1"
ARTIFACTS_BUCKET = "realtime-artifacts"
#: bounds: the emulator's start, the stack's creation (seconds)
START_TIMEOUT = 30.0
CREATE_TIMEOUT = 90.0
#: settings of the dev stage that point at ``make run``'s local services (moto, the local
#: gateway); on the emulator every AWS call goes to ministack (it sets ``AWS_ENDPOINT_URL``)
LOCAL_ONLY_SETTINGS = ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SQS",
                       "AWS_ENDPOINT_URL_LAMBDA", "WEBSOCKET_ENDPOINT_URL")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Deployed:
    """A stack created on the emulator.

    Attributes:
        stack_name: the CloudFormation stack.
        outputs: its outputs (``WebsocketAPIId``, ``RestAPIId``, ``ConnectionsTableName``...).
        stage: the API Gateway stage (``dev``).
        changes: what the harness changed for the emulator, one line per change.
    """

    stack_name: str
    outputs: Dict[str, str]
    stage: str
    changes: List[str]


class Ministack:
    """One ministack process (its own session: :meth:`stop` kills the process group, so the
    Python workers it starts for the functions go with it)."""

    def __init__(self, workdir: Path, port: int = 0, venv: Path = VENV):
        self.venv = venv
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.process: Optional[subprocess.Popen] = None
        self.log_path = self.workdir / "ministack.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Ministack":
        executable = self.venv / "bin" / "ministack"
        if not executable.exists():
            raise RuntimeError(f"{executable} is missing: run make ministack-venv")
        self.workdir.mkdir(parents=True, exist_ok=True)
        # gap no-lambda-runtime: the functions inherit this environment, so it holds nothing of
        # ours (no AWS_*, JWT_*, endpoints of the test process)
        env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "LC_ALL")
               if name in os.environ}
        env.update(BIND_HOST="127.0.0.1", GATEWAY_PORT=str(self.port),
                   MINISTACK_REGION=REGION, TMPDIR=str(self.workdir),
                   S3_DATA_DIR=str(self.workdir / "s3"), LOG_LEVEL="WARNING",
                   PYTHONDONTWRITEBYTECODE="1")
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen([str(executable)], cwd=self.workdir, env=env,
                                            stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ministack exited ({self.process.returncode}): "
                                   f"{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                self.client("sts").get_caller_identity()
                return self
            except Exception:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"ministack did not answer within {START_TIMEOUT:.0f} s: "
                           f"{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after 5 s (idempotent)."""
        process, self.process = self.process, None
        if process is None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=wait)
                # the group may outlive its leader (function workers): make sure
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
            break

    def __enter__(self) -> "Ministack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id="test", aws_secret_access_key="test",
                            config=Config(retries={"max_attempts": 2},
                                          connect_timeout=5, read_timeout=30))

    def python(self) -> str:
        """The emulator's interpreter as a Lambda runtime name (``python3.11``)."""
        return gaps.emulator_python_of(str(self.venv / "bin" / "python"))

    # --- addresses on the emulator ------------------------------------------------------------

    def execute_api(self, api_id: str, stage: str, scheme: str = "http") -> str:
        """ministack's path form of an ``execute-api`` URL (its host form needs DNS for
        ``<api>.execute-api.localhost``)."""
        return f"{scheme}://127.0.0.1:{self.port}/_aws/execute-api/{api_id}/{stage}"

    # --- deploy -------------------------------------------------------------------------------

    def deploy(self, build_dir: Path, stage: str, settings: Dict[str, str],
               stack_name: Optional[str] = None) -> Deployed:
        """Deploy ``make package``'s output (``build/<stage>/cloudformation``).

        Args:
            build_dir: the folder with ``sam.json`` and ``deployment.zip``.
            stage: the stage it was packaged for.
            settings: environment variables of every function to set (``None`` values remove).
            stack_name: default ``realtime-<stage>``.
        Returns:
            the created stack.
        Raises:
            RuntimeError: the stack did not reach ``CREATE_COMPLETE`` (its failed events named).
        """
        stack_name = stack_name or f"realtime-{stage}"
        template = json.loads((build_dir / "sam.json").read_text())
        gaps.check_runtime(template, self.python())
        s3 = self.client("s3")
        s3.create_bucket(Bucket=ARTIFACTS_BUCKET)
        # aws cloudformation package: the code to S3, CodeUri pointing at it
        code_key = f"{stack_name}/deployment.zip"
        s3.upload_file(str(build_dir / "deployment.zip"), ARTIFACTS_BUCKET, code_key)
        for resource in template["Resources"].values():
            if resource["Type"] == "AWS::Serverless::Function":
                properties = resource["Properties"]
                properties["CodeUri"] = f"s3://{ARTIFACTS_BUCKET}/{code_key}"
                variables = properties.setdefault("Environment", {}).setdefault("Variables", {})
                for name, value in settings.items():
                    if value is None:
                        variables.pop(name, None)
                    else:
                        variables[name] = value
        management = {"Fn::Sub": self.execute_api("${WebsocketAPI}", stage)}
        changes = gaps.adapt_template(template, management)
        template_key = f"{stack_name}/sam.json"
        s3.put_object(Bucket=ARTIFACTS_BUCKET, Key=template_key,
                      Body=json.dumps(template).encode())
        cloudformation = self.client("cloudformation")
        cloudformation.create_stack(
            StackName=stack_name, TemplateURL=f"{self.endpoint}/{ARTIFACTS_BUCKET}/{template_key}",
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"])
        deadline = time.monotonic() + CREATE_TIMEOUT
        while True:
            stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
            status = stack["StackStatus"]
            if not status.endswith("_IN_PROGRESS") or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        if status != "CREATE_COMPLETE":
            events = cloudformation.describe_stack_events(StackName=stack_name)["StackEvents"]
            failed = [f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason')}"
                      for e in events if e["ResourceStatus"].endswith("FAILED")]
            raise RuntimeError(f"stack {stack_name} is {status}: {failed[:10]}")
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        changes += gaps.after_create(template, outputs, self.client)
        return Deployed(stack_name, outputs, stage, changes)


def stage_settings(issuer: str, audience: str) -> Dict[str, Optional[str]]:
    """The dev stage's settings that name where things are, for the emulator: the dev issuer
    on its port, and none of ``make run``'s local endpoints (:data:`LOCAL_ONLY_SETTINGS`)."""
    settings: Dict[str, Optional[str]] = {name: None for name in LOCAL_ONLY_SETTINGS}
    settings.update(JWT_ISSUER=issuer, JWT_ISSUER_JWKS_URI=f"{issuer}/.well-known/jwks.json",
                    JWT_AUTHORIZED_AUDIENCES=audience)
    return settings


def package(stage: str, python: str) -> Path:
    """``make package STAGE=<stage>`` (``python -m infra.package``); returns the build folder."""
    result = subprocess.run([python, "-m", "infra.package", "--stage", stage], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"make package STAGE={stage} failed:\n{result.stdout[-3000:]}\n"
                           f"{result.stderr[-3000:]}")
    return ROOT / "build" / stage / "cloudformation"
