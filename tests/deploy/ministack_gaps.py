"""Where ministack 1.5.33 (tests/deploy/requirements-ministack.txt) is not AWS, and how the deploy
suite works around each gap: here and nowhere else. The app is never changed for the emulator;
only the template it is deployed from, the emulator's settings after the stack is created, or
what a test expects where AWS and the emulator answer differently.

Each gap has a name (``GAPS``); docs/deploy.md ("Try the deploy locally") lists the same names
with what the suite covers. Measured with ministack 1.5.33; a newer ministack that closes a gap
shows up here as a workaround with nothing left to do.

Gaps worked around:

* ``no-websocket-deployment``: ``AWS::ApiGatewayV2::Deployment`` is refused ("unsupported
  resource type"), so the stack cannot be created. ministack serves a WebSocket stage's routes
  without a deployment: :func:`adapt_template` drops the deployments and the stage's
  ``DeploymentId``, and makes the stage wait for the routes and the authorizer instead.
* ``no-metric-math-alarm``: an ``AWS::CloudWatch::Alarm`` with ``Metrics`` (the only form our
  alarms use) is refused. :func:`adapt_template` drops those alarms (nothing in the emulator
  would raise them).
* ``ttl-ignored``: ``TimeToLiveSpecification`` of ``AWS::DynamoDB::Table`` is ignored.
  :func:`after_create` sets it with ``UpdateTimeToLive``, as the template asks.
* ``no-ttl-remove-record``: a TTL deletion writes no ``REMOVE`` record to the table's stream, so
  ``registry_stream`` (presence ``member_removed`` for connections that vanished without a
  ``$disconnect``) is never invoked. Not worked around: tests/unit cover it with the records
  AWS writes.
* ``identity-source-filled-in``: an authorizer created without ``IdentitySource`` gets
  ``$request.header.Authorization``, so every connect without that header (pusher-js, browsers
  with ``?token=``) is refused with 401 before ``ws_authorizer`` runs. :func:`after_create`
  sets the identity sources back to none with ``UpdateAuthorizer``.
* ``unauthorized-is-500``: when the authorizer raises ``Exception('Unauthorized')`` AWS answers
  the handshake with 401; ministack with 500. :data:`REFUSED_HANDSHAKE_STATUS` is what a test
  expects from the emulator.
* ``unreachable-domain-name``: the ``$connect``/``$default`` events carry ``domainName``
  ``<api>.execute-api.localhost`` (no port, no TLS), where AWS gives the ``execute-api`` host
  that serves the management API; PostToConnection to ``https://<domainName>/<stage>`` reaches
  nothing. :func:`adapt_template` sets the app's own setting ``WEBSOCKET_ENDPOINT_URL`` to the
  emulator's management endpoint.
* ``no-lambda-runtime``: Python functions run in ministack's own interpreter, not a Lambda
  runtime: no boto3 unless ministack's environment has it (requirements-ministack.txt installs
  the one the zip leaves to the runtime), the interpreter's version is ministack's whatever
  the template's ``Runtime`` (:func:`check_runtime`), and every function inherits ministack's
  environment (``tests/deploy/ministack.py`` starts it with a minimal one).
* ``get-connection-keys``: GetConnection answers ``ConnectedAt``/``Identity``/``LastActiveAt``
  where AWS answers ``connectedAt``/``identity``/``lastActiveAt``. The app never calls
  GetConnection and neither does the suite: nothing to work around.
* ``import-rest-api``: ``make deploy`` (``chalice deploy``) fails against the emulator:
  Chalice's ``ImportRestApi`` is taken as a plain ``CreateRestApi`` (an empty API named
  "unnamed"), and the ``UpdateRestApi`` that follows answers ``"minimumCompressionSize": ""``,
  which botocore refuses to parse (``ValueError``); ``PutRestApi`` (Chalice's update) answers
  ``NotFoundException``. Not worked around (it would no longer be ``make deploy``): see
  :data:`MAKE_DEPLOY_FAILURE` and docs/deploy.md.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, List

#: the names of the gaps, in the order of the module's docstring
GAPS = (
    "no-websocket-deployment",
    "no-metric-math-alarm",
    "ttl-ignored",
    "no-ttl-remove-record",
    "identity-source-filled-in",
    "unauthorized-is-500",
    "unreachable-domain-name",
    "no-lambda-runtime",
    "get-connection-keys",
    "import-rest-api",
)

#: gap ``unauthorized-is-500``: the status of a handshake the ``$connect`` authorizer refuses
#: (AWS: 401)
REFUSED_HANDSHAKE_STATUS = 500
AWS_REFUSED_HANDSHAKE_STATUS = 401

#: gap ``import-rest-api``: the call ``make deploy`` fails on, as botocore reports it
MAKE_DEPLOY_FAILURE = (
    "chalice deploy: ImportRestApi creates an empty REST API named \"unnamed\"; the "
    "UpdateRestApi after it answers {\"minimumCompressionSize\": \"\"} and botocore raises "
    "ValueError: invalid literal for int() with base 10: ''; PutRestApi answers "
    "NotFoundException (Unknown API Gateway v1 path)")


def adapt_template(template: Dict[str, Any], management_endpoint: Dict[str, Any]) -> List[str]:
    """Change ``make package``'s CloudFormation template (after the code is uploaded) so the
    emulator creates the stack; in place.

    Args:
        template: the SAM template.
        management_endpoint: the emulator's ``@connections`` endpoint of the stage, as a
            CloudFormation value (``Fn::Sub`` on the WebSocket API's id).
    Returns:
        one line per change, naming its gap.
    """
    resources = template["Resources"]
    changes: List[str] = []
    # gap no-websocket-deployment
    stages = [r for r in resources.values() if r["Type"] == "AWS::ApiGatewayV2::Stage"]
    for logical, resource in list(resources.items()):
        if resource["Type"] == "AWS::ApiGatewayV2::Deployment":
            del resources[logical]
            changes.append(f"no-websocket-deployment: dropped {logical}")
    waits_for = sorted(logical for logical, resource in resources.items()
                       if resource["Type"] in ("AWS::ApiGatewayV2::Route",
                                               "AWS::ApiGatewayV2::Authorizer"))
    for stage in stages:
        stage["Properties"].pop("DeploymentId", None)
        stage["DependsOn"] = waits_for
    # gap no-metric-math-alarm
    for logical, resource in list(resources.items()):
        if resource["Type"] == "AWS::CloudWatch::Alarm" and "Metrics" in resource["Properties"]:
            del resources[logical]
            changes.append(f"no-metric-math-alarm: dropped {logical}")
    # gap unreachable-domain-name
    for logical, resource in resources.items():
        if resource["Type"] == "AWS::Serverless::Function":
            variables = resource["Properties"].setdefault("Environment", {}).setdefault(
                "Variables", {})
            variables["WEBSOCKET_ENDPOINT_URL"] = management_endpoint
    changes.append("unreachable-domain-name: WEBSOCKET_ENDPOINT_URL of every function")
    return changes


def after_create(template: Dict[str, Any], outputs: Dict[str, str], clients: Any) -> List[str]:
    """Set what the emulator left out of the created stack.

    Args:
        template: the template the stack was created from.
        outputs: the stack's outputs (``WebsocketAPIId``, ``ConnectionsTableName``).
        clients: ``clients(service)`` gives a boto3 client of the emulator.
    Returns:
        one line per change, naming its gap.
    """
    changes: List[str] = []
    resources = template["Resources"]
    # gap identity-source-filled-in: our authorizer has no identity source (docs/deploy.md,
    # "The $connect authorizer and identity sources")
    apigw = clients("apigatewayv2")
    api_id = outputs["WebsocketAPIId"]
    for authorizer in apigw.get_authorizers(ApiId=api_id)["Items"]:
        declared = [r for r in resources.values()
                    if r["Type"] == "AWS::ApiGatewayV2::Authorizer"
                    and r["Properties"].get("Name") == authorizer["Name"]]
        wanted = declared[0]["Properties"].get("IdentitySource", []) if declared else None
        if wanted is not None and authorizer.get("IdentitySource") != wanted:
            apigw.update_authorizer(ApiId=api_id, AuthorizerId=authorizer["AuthorizerId"],
                                    IdentitySource=wanted)
            changes.append(f"identity-source-filled-in: {authorizer['Name']} "
                           f"{authorizer.get('IdentitySource')} -> {wanted}")
    # gap ttl-ignored
    dynamodb = clients("dynamodb")
    for resource in resources.values():
        spec = resource.get("Properties", {}).get("TimeToLiveSpecification")
        if resource["Type"] == "AWS::DynamoDB::Table" and spec and spec.get("Enabled"):
            name = resource["Properties"]["TableName"]
            status = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            if status.get("TimeToLiveStatus") != "ENABLED":
                dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification={
                    "AttributeName": spec["AttributeName"], "Enabled": True})
                changes.append(f"ttl-ignored: TTL on {name}.{spec['AttributeName']}")
    return changes


def check_runtime(template: Dict[str, Any], emulator_python: str) -> None:
    """Gap ``no-lambda-runtime``: the functions run in the emulator's interpreter, whatever
    their ``Runtime``; the zip's compiled wheels (cryptography, httptools) are built for that
    ``Runtime``, so the two must agree.

    Args:
        template: the template.
        emulator_python: the emulator's ``python3.X``.
    Raises:
        RuntimeError: a function's ``Runtime`` is another Python.
    """
    runtimes = {r["Properties"].get("Runtime") for r in template["Resources"].values()
                if r["Type"] == "AWS::Serverless::Function"}
    if runtimes != {emulator_python}:
        raise RuntimeError(
            f"the functions' runtimes are {sorted(map(str, runtimes))} but ministack runs them "
            f"with {emulator_python} (make ministack-venv PYTHON=<that python>)")


def emulator_python_of(executable: str = sys.executable) -> str:
    """``python3.X`` of an interpreter's version string (used for the emulator's venv)."""
    import subprocess

    version = subprocess.run([executable, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    return f"python{version}"
