"""``make package STAGE=prod``: the CloudFormation (SAM) template and Lambda zip of one stage.

Steps: write the stage's merge template (:func:`infra.templates.merge_template`), run
``chalice package --stage <stage> --merge-template … build/<stage>/cloudformation``, then check
the zip: no development packages inside (boto3 is in the Lambda runtime; moto, pytest and the
rest never belong there), no bytecode (``__pycache__``, ``*.pyc``), and a size of at most
:data:`MAX_ZIP_BYTES` (reported next to a reference zip of ``pyjwt[crypto]`` + ``pusher``
alone, ``pip install --target`` + zip, the way Chalice builds its own), and finally ``cfn-lint`` on
the SAM template and on the CloudFormation that the SAM transform makes of it.

Reproducible: Chalice zips every file under ``chalicelib/``, so ``__pycache__`` left by a
test run used to land in the zip (and grow it). :func:`remove_bytecode` deletes it first and
Chalice runs with ``PYTHONDONTWRITEBYTECODE=1`` (it imports ``app.py`` to read it), so the
same sources give the same zip. The WebSocket stage's deployment gets a logical id that
hashes the whole API (:func:`infra.templates.pin_websocket_deployment`), so a route change
redeploys the stage. ``--format terraform`` runs
``chalice package --pkg-format terraform`` instead (no merge template there: see
docs/deploy.md, "Terraform").

Deploy the result with::

    aws cloudformation package --template-file build/prod/cloudformation/sam.json \\
        --s3-bucket <bucket> --output-template-file build/prod/packaged.yaml
    aws cloudformation deploy --template-file build/prod/packaged.yaml \\
        --stack-name realtime-prod --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra import templates  # noqa: E402

#: the zip was held to this many times the reference zip (issue 6); reported, no longer the
#: limit: Powertools' logging and metrics (issue 12) add about 1.1 MB to the zip
SIZE_LIMIT_FACTOR = 1.10
#: the Lambda zip's budget, bytes: 9 MiB — issue 12's 8.5 MiB plus httptools (0.47 MiB zipped,
#: issue 11: the push sender's answer parser, which halved its CPU per post)
MAX_ZIP_BYTES = 9 * 1024 * 1024
#: top-level names that must never be in the Lambda zip (``chalice/`` is allowed: Chalice adds
#: its small runtime, ``chalice/app.py``, to every zip)
FORBIDDEN_TOP_LEVEL = (
    "boto3", "botocore", "s3transfer", "moto", "pytest", "_pytest", "hypothesis", "websockets", "cfnlint", "samtranslator", "playwright", "devtools", "tests", "bench", "infra",
)
#: what the reference zip holds: the issue's yardstick, pyjwt[crypto] + pusher
REFERENCE_REQUIREMENTS = ("pyjwt[crypto]", "pusher")
#: the Lambda platform Chalice builds for (python3.11 runtime, x86_64)
LAMBDA_PIP_PLATFORM = ("--platform", "manylinux2014_x86_64", "--implementation", "cp",
                       "--python-version", "3.11", "--only-binary=:all:")


def _tool(name: str) -> str:
    """A console script of this virtualenv (``chalice``, ``cfn-lint``), else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} is not installed (pip install -r requirements-dev.txt)")
    return found


def _env() -> dict:
    env = dict(os.environ)
    # chalice package needs a region for ARNs it leaves to CloudFormation; no credentials
    env.setdefault("AWS_DEFAULT_REGION", env.get("AWS_REGION", "us-east-1"))
    # chalice imports app.py (and chalicelib) to read it: no __pycache__ for it to zip
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


#: directories of the project that Chalice copies into the zip file by file
ZIPPED_SOURCE_DIRS = ("chalicelib", "vendor")


def is_bytecode(zip_name: str) -> bool:
    """True for a compiled-Python entry (``…/__pycache__/…`` or ``*.pyc``/``*.pyo``)."""
    return "__pycache__/" in f"/{zip_name}" or zip_name.endswith((".pyc", ".pyo"))


def remove_bytecode(project_dir: Path = ROOT) -> List[Path]:
    """Delete ``__pycache__`` directories and stray ``*.pyc`` under the directories Chalice
    zips (:data:`ZIPPED_SOURCE_DIRS`), so the zip holds sources only. Returns what was
    deleted. Python re-creates the caches when it needs them."""
    removed: List[Path] = []
    for name in ZIPPED_SOURCE_DIRS:
        base = project_dir / name
        if not base.is_dir():
            continue
        for cache in sorted(base.rglob("__pycache__"), reverse=True):
            if cache.is_dir():
                shutil.rmtree(cache, ignore_errors=True)
                removed.append(cache)
        for compiled in list(base.rglob("*.py[co]")):
            compiled.unlink(missing_ok=True)
            removed.append(compiled)
    return removed


def write_merge_template(stage: str, out_dir: Path, project_dir: Path = ROOT) -> Path:
    """Write ``merge-template.json`` for ``stage`` into ``out_dir``; return its path.

    The custom domains' certificates are checked against the region ``chalice package`` is
    given (``AWS_REGION`` / ``AWS_DEFAULT_REGION``, else us-east-1): package with the
    region the stack will be deployed to."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "merge-template.json"
    cfg = templates.load_stage(stage, project_dir)
    merged = templates.merge_template(cfg, region=_env()["AWS_DEFAULT_REGION"])
    path.write_text(json.dumps(merged, indent=2) + "\n")
    return path


def chalice_package(stage: str, out_dir: Path, *, pkg_format: str = "cloudformation",
                    project_dir: Path = ROOT) -> Path:
    """Run ``chalice package`` for ``stage`` into ``out_dir/<pkg_format>``.

    Returns:
        the output directory (``sam.json`` or ``chalice.tf.json`` plus ``deployment.zip``).
    Raises:
        subprocess.CalledProcessError: chalice failed (its output is on stderr).
    """
    target = out_dir / pkg_format
    if target.exists():
        shutil.rmtree(target)
    command = [_tool("chalice"), "--project-dir", str(project_dir), "package",
               "--stage", stage]
    if pkg_format == "terraform":
        command += ["--pkg-format", "terraform"]
    else:
        command += ["--merge-template", str(write_merge_template(stage, out_dir, project_dir))]
    command.append(str(target))
    remove_bytecode(project_dir)
    subprocess.run(command, check=True, cwd=project_dir, env=_env())
    if pkg_format != "terraform":
        sam = target / "sam.json"
        pinned = templates.pin_websocket_deployment(json.loads(sam.read_text()))
        sam.write_text(json.dumps(pinned, indent=2) + "\n")
    return target


def zip_directory(source: Path, destination: Path) -> Path:
    """Zip every file under ``source`` (deflated, like Chalice's own packager)."""
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(source).as_posix())
    return destination


def reference_zip(cache_dir: Path, requirements: Sequence[str] = None) -> Path:
    """A zip of ``pyjwt[crypto]`` + ``pusher`` alone, at the versions requirements.txt pins,
    installed with ``pip install --target`` for the Lambda platform; cached in ``cache_dir``
    by the requirement list."""
    requirements = list(requirements or _pinned_reference_requirements())
    key = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:12]
    destination = cache_dir / f"reference-{key}.zip"
    if destination.exists():
        return destination
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="reference-", dir=cache_dir) as tmp:
        site = Path(tmp) / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
                        "--disable-pip-version-check", "--target", str(site),
                        *LAMBDA_PIP_PLATFORM, *requirements],
                       check=True, capture_output=True, text=True)
        shutil.rmtree(site / "bin", ignore_errors=True)
        zip_directory(site, Path(tmp) / "reference.zip").replace(destination)
    return destination


def _pinned_reference_requirements() -> List[str]:
    """``pyjwt[crypto]`` and ``pusher`` with the pins of requirements.txt (and the
    ``cryptography`` pin that ``[crypto]`` pulls in), so both zips hold the same versions."""
    pins = []
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        name = line.split("==", 1)[0].split("[", 1)[0].lower()
        if line and name in ("pyjwt", "pusher", "cryptography"):
            pins.append(line)
    return pins or list(REFERENCE_REQUIREMENTS)


@dataclass(frozen=True)
class ZipReport:
    """Size check of a Lambda zip.

    Attributes:
        zip_bytes, reference_bytes: sizes in bytes.
        forbidden: top-level names found in the zip that must not be there.
        bytecode: compiled-Python entries (``__pycache__``, ``*.pyc``) found in the zip.
    """

    zip_bytes: int
    reference_bytes: int
    forbidden: List[str]
    bytecode: List[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.zip_bytes / self.reference_bytes

    @property
    def ok(self) -> bool:
        return not self.forbidden and not self.bytecode and self.zip_bytes <= MAX_ZIP_BYTES

    def describe(self) -> str:
        mib = 1024 * 1024
        lines = [f"Lambda zip:      {self.zip_bytes / mib:6.2f} MiB ({self.zip_bytes} bytes)",
                 f"reference zip:   {self.reference_bytes / mib:6.2f} MiB "
                 f"(pyjwt[crypto] + pusher alone)",
                 f"ratio:           {self.ratio:6.3f} (issue 6 held it to "
                 f"{SIZE_LIMIT_FACTOR:.2f})",
                 f"budget:          {MAX_ZIP_BYTES / mib:6.2f} MiB: "
                 f"{'within' if self.zip_bytes <= MAX_ZIP_BYTES else 'OVER'}"]
        if self.forbidden:
            lines.append(f"FORBIDDEN in the zip: {', '.join(self.forbidden)}")
        if self.bytecode:
            shown = ", ".join(self.bytecode[:5]) + (" …" if len(self.bytecode) > 5 else "")
            lines.append(f"BYTECODE in the zip ({len(self.bytecode)} entries): {shown}")
        return "\n".join(lines)


def top_level_names(zip_path: Path) -> List[str]:
    """The distinct first path components in a zip (packages, modules, dist-info dirs)."""
    with zipfile.ZipFile(zip_path) as archive:
        return sorted({name.split("/", 1)[0] for name in archive.namelist()})


def check_zip(zip_path: Path, reference: Path) -> ZipReport:
    """Compare ``zip_path`` with the reference zip; list forbidden contents and bytecode."""
    forbidden = []
    for name in top_level_names(zip_path):
        base = name.split("-", 1)[0].split(".", 1)[0].lower()
        if base in FORBIDDEN_TOP_LEVEL:
            forbidden.append(name)
    with zipfile.ZipFile(zip_path) as archive:
        bytecode = sorted(n for n in archive.namelist() if is_bytecode(n))
    return ZipReport(zip_path.stat().st_size, reference.stat().st_size, forbidden, bytecode)


#: stands in for the S3 location ``aws cloudformation package`` gives each function's code
#: (the SAM transform accepts only ``s3://`` code locations)
PLACEHOLDER_CODE_URI = "s3://package-bucket/deployment.zip"


def sam_transform(template: Mapping[str, Any], region: str = "us-east-1") -> Dict[str, Any]:
    """The CloudFormation that the ``AWS::Serverless-2016-10-31`` transform makes of a SAM
    template, computed offline with AWS's own translator (``aws-sam-translator``, the code
    CloudFormation runs), local ``CodeUri`` values replaced by :data:`PLACEHOLDER_CODE_URI`.

    cfn-lint 1.x validates SAM resources against SAM schemas only, which leave the
    properties SAM passes through unchecked (an invalid ``FunctionResponseTypes`` on an SQS
    event, for one); on the transformed template they meet the CloudFormation schemas.

    Raises:
        ValueError: the SAM transform refuses the template (the message lists why).
    """
    import boto3
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    sam = copy.deepcopy(dict(template))
    for resource in sam.get("Resources", {}).values():
        props = resource.get("Properties") or {}
        if resource.get("Type") == "AWS::Serverless::Function" \
                and isinstance(props.get("CodeUri"), str) \
                and not props["CodeUri"].startswith("s3://"):
            props["CodeUri"] = PLACEHOLDER_CODE_URI
    translator = Translator(managed_policy_map={}, sam_parser=Parser(),
                            boto_session=boto3.session.Session(region_name=region))
    try:
        return translator.translate(sam_template=sam, parameter_values={})
    except InvalidDocumentException as exc:
        raise ValueError("; ".join(cause.message for cause in exc.causes)) from None


def cfn_lint(template: Path) -> subprocess.CompletedProcess:
    """Run cfn-lint (offline) on ``template`` and, for a SAM template, on its transformed
    CloudFormation (:func:`sam_transform`), written next to it as
    ``<name>.transformed.json`` so findings name a file one can open.

    Returns:
        a ``CompletedProcess``: ``returncode`` 0 when both pass; ``stdout`` the findings
        (or why the transform failed).
    """
    paths = [str(template)]
    document = json.loads(template.read_text())
    if "AWS::Serverless-2016-10-31" in str(document.get("Transform", "")):
        region = _env()["AWS_DEFAULT_REGION"]
        try:
            transformed = sam_transform(document, region)
        except ValueError as exc:
            return subprocess.CompletedProcess(["sam-transform", str(template)], 1,
                                               f"SAM transform failed: {exc}\n", "")
        out = template.with_name(f"{template.stem}.transformed.json")
        out.write_text(json.dumps(transformed, indent=2) + "\n")
        paths.append(str(out))
    return subprocess.run([_tool("cfn-lint"), "--", *paths], env=_env(),
                          capture_output=True, text=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Package one stage for CloudFormation "
                                                 "or Terraform and check the Lambda zip.")
    parser.add_argument("--stage", default="prod")
    parser.add_argument("--format", choices=("cloudformation", "terraform"),
                        default="cloudformation")
    parser.add_argument("--out", type=Path, default=None, help="default build/<stage>")
    args = parser.parse_args(argv)
    out_dir = args.out or ROOT / "build" / args.stage

    try:
        target = chalice_package(args.stage, out_dir, pkg_format=args.format)
        reference = reference_zip(ROOT / "build" / "reference")
    except subprocess.CalledProcessError as exc:
        print(f"package failed: {' '.join(map(str, exc.cmd[:3]))} … exited with "
              f"{exc.returncode}\n{exc.stderr or ''}", file=sys.stderr)
        return 1
    report = check_zip(target / "deployment.zip", reference)
    print(report.describe())
    status = 0 if report.ok else 1
    if args.format == "cloudformation":
        lint = cfn_lint(target / "sam.json")
        print("cfn-lint:        " + ("passed" if lint.returncode == 0 else "FAILED"))
        if lint.returncode != 0:
            print(lint.stdout + lint.stderr)
            status = 1
        print(f"template:        {target / 'sam.json'}")
        for line in templates.describe_domains(templates.load_stage(args.stage)):
            print(line)
    else:
        print(f"terraform:       {target / 'chalice.tf.json'} (add the authorizer: docs/deploy.md)")
    return status


if __name__ == "__main__":
    sys.exit(main())
