"""The IAM policy files of every stage: scoped to this app's resources (no ``"Resource": "*"``),
and granting exactly the AWS calls the code in ``chalicelib/`` makes — found by reading the
code, so a new boto3 call without its permission (or a permission nobody uses) fails here.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import botocore.session
import pytest
from botocore import xform_name

from chalicelib.registry.table import INDEX_NAME
from infra import templates

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("dev", "staging", "prod")
LOG_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents"}
#: what the Lambda service calls with the function's role to run an SQS event source
#: (Lambda Developer Guide, "Using Lambda with Amazon SQS": execution role permissions)
SQS_EVENT_SOURCE_ACTIONS = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
#: what Lambda calls with the function's role to read a DynamoDB stream (Lambda Developer Guide,
#: "Using Lambda with DynamoDB": execution role permissions): registry_stream's event source
STREAM_EVENT_SOURCE_ACTIONS = {"dynamodb:DescribeStream", "dynamodb:GetRecords",
                               "dynamodb:GetShardIterator", "dynamodb:ListStreams"}
MANAGEMENT_METHODS = {"post_to_connection": "POST", "delete_connection": "DELETE",
                      "get_connection": "GET"}
CHALICE_WEBSOCKET_METHODS = {"send": "POST", "close": "DELETE", "info": "GET"}
#: API Gateway V2 reads the code makes (finding the WebSocket API by name), as IAM sees them:
#: ``apigateway:<HTTP method>`` on the resource path (API Gateway Developer Guide, "Control
#: access for managing an API with IAM")
APIGATEWAY_READS = {"get_apis": ("apigateway:GET", "/apis")}
#: Lambda calls (``lambda_client.invoke(FunctionName=..., InvocationType=...)``): the Pusher
#: dialect's ``$connect`` invokes ``pusher_hello`` asynchronously
LAMBDA_CALLS = {"invoke": "lambda:InvokeFunction"}
#: SQS calls the code makes on the push queue (sharded fan-out, webhook jobs and their
#: back-off) and their IAM actions (``SendMessageBatch`` is authorized by ``sqs:SendMessage``:
#: Amazon SQS Developer Guide, "Amazon SQS API permissions")
SQS_CALLS = {"send_message_batch": "sqs:SendMessage", "send_message": "sqs:SendMessage",
             "get_queue_url": "sqs:GetQueueUrl",
             "change_message_visibility": "sqs:ChangeMessageVisibility"}
#: DynamoDB transactions have no IAM action of their own: each item is authorized by its own
#: action (DynamoDB Developer Guide, "Using IAM with DynamoDB transactions"); the presence
#: joins and leaves write Put, Update and Delete items
TRANSACT_CALLS = {"transact_write_items": {"dynamodb:PutItem", "dynamodb:UpdateItem",
                                           "dynamodb:DeleteItem"}}
#: functions of chalicelib that no Lambda handler runs (tests and the local stack create the
#: table with them; deployments create it from CloudFormation), so their calls need no grant
NOT_RUN_IN_LAMBDA = {("table.py", "create_table")}


def _operations(service: str) -> dict:
    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(name): name for name in model.operation_names}


def calls_in_chalicelib() -> dict:
    """IAM actions the code needs: ``{"dynamodb:PutItem", ..., "execute-api:POST"}``.

    DynamoDB and SSM operations are recognised as method calls (``client.get_parameter(``)
    or operation-name strings (``_call("put_item", ...)``); management API calls by
    ``post_to_connection``-style methods and Chalice's ``websocket_api.send/close/info``.
    """
    dynamodb, ssm = _operations("dynamodb"), _operations("ssm")
    needed = set()
    for path in sorted((ROOT / "chalicelib").rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef,
                                           ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}
        skipped = {id(sub) for node in ast.walk(tree)
                   if isinstance(node, ast.FunctionDef)
                   and (path.name, node.name) in NOT_RUN_IN_LAMBDA
                   for sub in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            names = []
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                owner_name = owner.attr if isinstance(owner, ast.Attribute) else \
                    getattr(owner, "id", "")
                if owner_name == "websocket_api" and node.func.attr in CHALICE_WEBSOCKET_METHODS:
                    needed.add("execute-api:" + CHALICE_WEBSOCKET_METHODS[node.func.attr])
                    continue
                if owner_name == "connections":  # our registry module, not the management API
                    continue
                if node.func.attr in LAMBDA_CALLS and any(
                        k.arg == "FunctionName" for k in node.keywords):
                    needed.add(LAMBDA_CALLS[node.func.attr])
                    continue
                names.append(node.func.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and id(node) not in docstrings:
                names.append(node.value)
            for name in names:
                if name in APIGATEWAY_READS:
                    needed.add(APIGATEWAY_READS[name][0])
                elif name in SQS_CALLS:
                    needed.add(SQS_CALLS[name])
                elif name in TRANSACT_CALLS:
                    needed |= TRANSACT_CALLS[name]
                elif name in MANAGEMENT_METHODS:
                    needed.add("execute-api:" + MANAGEMENT_METHODS[name])
                elif name in dynamodb:
                    needed.add("dynamodb:" + dynamodb[name])
                elif name in ssm:
                    needed.add("ssm:" + ssm[name])
    return needed


@pytest.fixture(scope="module")
def needed():
    return calls_in_chalicelib()


def _policy(path: Path) -> dict:
    return json.loads(path.read_text())


def _grants(policy: dict) -> dict:
    """action -> list of resources."""
    grants = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) \
            else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) \
            else [statement["Resource"]]
        for action in actions:
            grants.setdefault(action, []).extend(resources)
    return grants


def test_the_code_scan_finds_the_calls_we_know_of(needed):
    # the registry's writes and queries, PostToConnection, the SSM secret read, and the
    # lookup of the WebSocket API by name
    assert {"dynamodb:PutItem", "dynamodb:Query", "execute-api:POST",
            "ssm:GetParameter", "apigateway:GET", "sqs:SendMessage", "sqs:GetQueueUrl"} <= needed


@pytest.mark.parametrize("stage", STAGES)
def test_stage_policy_grants_exactly_what_the_code_calls(stage, needed):
    cfg = templates.load_stage(stage)
    files = {cfg.policy_files[f] for f in templates.FUNCTIONS
             if f not in ("jwt_auth", "ws_authorizer")}
    assert files == {ROOT / ".chalice" / f"policy-{stage}.json"}
    grants = _grants(_policy(files.pop()))

    dynamo_needed = {a for a in needed if a.startswith("dynamodb:")}
    assert {a for a in grants if a.startswith("dynamodb:")} == \
        dynamo_needed | STREAM_EVENT_SOURCE_ACTIONS
    for action in STREAM_EVENT_SOURCE_ACTIONS:
        assert grants[action] == [f"arn:aws:dynamodb:*:*:table/{cfg.table_name}/stream/*"]
    for action in dynamo_needed:
        assert sorted(grants[action]) == sorted([
            f"arn:aws:dynamodb:*:*:table/{cfg.table_name}",
            f"arn:aws:dynamodb:*:*:table/{cfg.table_name}/index/{INDEX_NAME}"])

    methods = {a.split(":")[1] for a in needed if a.startswith("execute-api:")}
    assert grants["execute-api:ManageConnections"] == [
        f"arn:aws:execute-api:*:*:*/{cfg.api_gateway_stage}/{m}/@connections/*"
        for m in sorted(methods)]

    sqs_needed = SQS_EVENT_SOURCE_ACTIONS | {a for a in needed if a.startswith("sqs:")}
    for action in sqs_needed:
        assert grants[action] == [f"arn:aws:sqs:*:*:{cfg.queue_name}"]
    assert {a for a in grants if a.startswith("sqs:")} == sqs_needed

    if cfg.secret_parameter:
        assert "ssm:GetParameter" in needed
        assert grants["ssm:GetParameter"] == [
            f"arn:aws:ssm:*:*:parameter/{cfg.secret_parameter.lstrip('/')}"]
    else:  # dev keeps its (dummy) secret in config.json and never calls SSM
        assert not any(a.startswith("ssm:") for a in grants)
    # GetApis lists the region's APIs: the list is the only resource it has
    assert grants["apigateway:GET"] == ["arn:aws:apigateway:*::/apis"]
    # $connect of a Pusher connection invokes pusher_hello, and only it
    assert "lambda:InvokeFunction" in needed
    assert grants["lambda:InvokeFunction"] == [
        f"arn:aws:lambda:*:*:function:{cfg.function_name('pusher_hello')}"]

    # the default aws/ssm key needs no KMS grant; nothing else is granted
    assert set(grants) <= LOG_ACTIONS | sqs_needed | dynamo_needed | {
        "execute-api:ManageConnections", "ssm:GetParameter", "apigateway:GET",
        "lambda:InvokeFunction"} | STREAM_EVENT_SOURCE_ACTIONS

    logs = {cfg.function_name(f) for f in templates.FUNCTIONS
            if f not in ("jwt_auth", "ws_authorizer")}
    for action in LOG_ACTIONS:
        assert sorted(grants[action]) == sorted(
            f"arn:aws:logs:*:*:log-group:/aws/lambda/{name}:*" for name in logs)


@pytest.mark.parametrize("stage", STAGES)
def test_authorizers_may_only_write_their_own_logs(stage):
    cfg = templates.load_stage(stage)
    for function in ("jwt_auth", "ws_authorizer"):
        grants = _grants(_policy(cfg.policy_files[function]))
        assert set(grants) == LOG_ACTIONS
        for action in LOG_ACTIONS:
            assert sorted(grants[action]) == sorted(
                f"arn:aws:logs:*:*:log-group:/aws/lambda/{cfg.function_name(f)}:*"
                for f in ("jwt_auth", "ws_authorizer"))


@pytest.mark.parametrize("path", sorted((ROOT / ".chalice").glob("policy-*.json")),
                         ids=lambda p: p.name)
def test_no_policy_has_a_bare_wildcard_resource(path):
    for statement in _policy(path)["Statement"]:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) \
            else [statement["Resource"]]
        for resource in resources:
            assert resource != "*"
            assert resource.startswith("arn:aws:")
            # the name part is always this app's (only region/account/API id are open), or
            # the list of APIs (GetApis, read-only, to find the WebSocket API by name)
            assert "realtime" in resource or "/@connections/" in resource \
                or resource == "arn:aws:apigateway:*::/apis"


@pytest.mark.parametrize("stage", ("staging", "prod"))
def test_deployed_stages_keep_no_secret_in_config(stage):
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    env = {**config.get("environment_variables", {}),
           **config["stages"][stage]["environment_variables"]}
    assert "PUSHER_SECRET" not in env
    assert env["PUSHER_SECRET_PARAMETER"].startswith(f"/realtime/{stage}/")
    assert "PUSHER_ENCRYPTION_MASTER_KEY_BASE64" not in env
    assert env["JWT_ISSUER"].startswith("https://")
    assert config["autogen_policy"] is False
