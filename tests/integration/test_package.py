"""``make package``: the real ``chalice package`` output of the prod stage, merged with
infra's template, checked offline (no AWS credentials): cfn-lint, the ``$connect`` authorizer,
the redeployment, the table (== chalicelib's schema), the queues, partial batch responses,
outputs, IAM scoping, the Lambda zip's contents and size; and the Terraform format.

Packaging runs once per module (about 5-15 s; pip may download wheels the first time).
"""
from __future__ import annotations

import copy
import zipfile
import json
import pytest

from chalicelib.registry.table import TABLE_SCHEMA, TTL_ATTRIBUTE
from infra import package, templates

STAGE = "prod"


@pytest.fixture(scope="module")
def packaged(prod_package):
    assert STAGE == "prod"  # the session's package (tests/integration/conftest.py)
    template = prod_package["template"]
    return {"dir": prod_package["dir"], "template": template,
            "resources": template["Resources"], "cfg": templates.load_stage(STAGE)}


def _ref(value):
    return value.get("Ref") if isinstance(value, dict) else None


def test_cfn_lint_passes_on_the_packaged_template(prod_package_lint):
    result = prod_package_lint  # package.cfn_lint on the packaged sam.json
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_is_not_a_rubber_stamp(packaged, tmp_path):
    broken = copy.deepcopy(packaged["template"])
    broken["Resources"]["PushQueue"]["Properties"]["VisibilityTimeout"] = 99999  # max 43200
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    result = package.cfn_lint(path)
    assert result.returncode != 0
    assert "VisibilityTimeout" in result.stdout or "43200" in result.stdout


def test_every_function_of_the_app_is_known_to_infra(packaged):
    functions = {name for name, r in packaged["resources"].items()
                 if r["Type"] == "AWS::Serverless::Function"}
    assert functions == {templates._cfn_name(f) for f in templates.FUNCTIONS}
    cfg = packaged["cfg"]
    for function in templates.FUNCTIONS:
        props = packaged["resources"][templates._cfn_name(function)]["Properties"]
        assert props["FunctionName"] == cfg.function_name(function)


def test_connect_route_uses_a_request_authorizer_on_ws_authorizer(packaged):
    resources = packaged["resources"]
    authorizer = resources[templates.AUTHORIZER_ID]
    assert authorizer["Type"] == "AWS::ApiGatewayV2::Authorizer"
    props = authorizer["Properties"]
    assert props["AuthorizerType"] == "REQUEST"
    assert _ref(props["ApiId"]) == "WebsocketAPI"
    assert "${WsAuthorizer.Arn}" in props["AuthorizerUri"]["Fn::Sub"]
    # no identity source: a browser's ?token= and a server's Authorization header both reach
    # the function (a listed source that is missing means 401 without calling it)
    assert not props.get("IdentitySource")

    route = resources["WebsocketConnectRoute"]["Properties"]
    assert route["RouteKey"] == "$connect"
    assert route["AuthorizationType"] == "CUSTOM"
    assert _ref(route["AuthorizerId"]) == templates.AUTHORIZER_ID
    for other in ("WebsocketMessageRoute", "WebsocketDisconnectRoute"):
        assert "AuthorizerId" not in resources[other]["Properties"]


def test_api_gateway_may_invoke_the_authorizer_and_only_through_it(packaged):
    permissions = [r["Properties"] for r in packaged["resources"].values()
                   if r["Type"] == "AWS::Lambda::Permission"
                   and r["Properties"]["FunctionName"] == {"Fn::GetAtt": ["WsAuthorizer", "Arn"]}]
    assert len(permissions) == 1
    permission = permissions[0]
    assert permission["Action"] == "lambda:InvokeFunction"
    assert permission["Principal"] == "apigateway.amazonaws.com"
    assert permission["SourceArn"]["Fn::Sub"].endswith(
        "${WebsocketAPI}/authorizers/${%s}" % templates.AUTHORIZER_ID)


def test_stage_is_redeployed_with_the_authorizer(packaged):
    resources = packaged["resources"]
    deployment_id = _ref(resources["WebsocketAPIStage"]["Properties"]["DeploymentId"])
    # Chalice's own deployment keeps its logical id: pointing the stage at a new logical id
    # is what makes CloudFormation create a deployment on a stack packaged before this merge
    assert deployment_id != "WebsocketAPIDeployment"
    deployment = resources[deployment_id]
    assert deployment["Type"] == "AWS::ApiGatewayV2::Deployment"
    assert _ref(deployment["Properties"]["ApiId"]) == "WebsocketAPI"
    assert {templates.AUTHORIZER_ID, "WebsocketConnectRoute"} <= set(deployment["DependsOn"])


def test_changing_the_authorizer_changes_the_deployment(packaged, monkeypatch):
    cfg = packaged["cfg"]
    before = templates.merge_template(cfg)["Resources"]["WebsocketAPIStage"]
    monkeypatch.setattr(templates, "IDENTITY_SOURCE", ["route.request.header.Authorization"])
    after = templates.merge_template(cfg)["Resources"]["WebsocketAPIStage"]
    assert before["Properties"]["DeploymentId"] != after["Properties"]["DeploymentId"]


def test_connections_table_is_chalicelibs_schema(packaged):
    table = packaged["resources"]["ConnectionsTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    props = table["Properties"]
    assert props["TableName"] == packaged["cfg"].table_name
    for key, value in TABLE_SCHEMA.items():
        if key == "StreamSpecification":  # CloudFormation's has no StreamEnabled member
            value = {"StreamViewType": value["StreamViewType"]}
        assert props[key] == value, key
    assert props["StreamSpecification"] == {"StreamViewType": "OLD_IMAGE"}
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert TTL_ATTRIBUTE == "expires_at"
    assert [i["IndexName"] for i in props["GlobalSecondaryIndexes"]] == \
        [i["IndexName"] for i in TABLE_SCHEMA["GlobalSecondaryIndexes"]]


def test_standalone_infrastructure_template_has_the_same_table_and_queues(packaged):
    standalone = templates.infrastructure_template(packaged["cfg"])["Resources"]
    for name in ("ConnectionsTable", "PushQueue", "PushDeadLetterQueue"):
        assert standalone[name] == packaged["resources"][name]


def test_push_queue_has_a_dead_letter_queue_and_room_for_the_worker(packaged):
    resources = packaged["resources"]
    queue = resources["PushQueue"]["Properties"]
    dlq = resources["PushDeadLetterQueue"]["Properties"]
    cfg = packaged["cfg"]
    assert queue["QueueName"] == cfg.queue_name == cfg.environment["PUSH_QUEUE_NAME"]
    assert dlq["QueueName"] == f"{cfg.queue_name}-dlq"
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["PushDeadLetterQueue", "Arn"]}
    assert 1 < queue["RedrivePolicy"]["maxReceiveCount"] <= 10
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
    worker_timeout = resources["PushWorker"]["Properties"]["Timeout"]
    assert queue["VisibilityTimeout"] >= 6 * worker_timeout


def test_push_worker_reports_batch_item_failures_on_the_stack_queue(packaged):
    events = packaged["resources"]["PushWorker"]["Properties"]["Events"]
    sqs = events[templates.SQS_EVENT_NAME]
    assert sqs["Type"] == "SQS"
    props = sqs["Properties"]
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["Queue"] == {"Fn::Sub": "${PushQueue.Arn}"}  # not a hand-built ARN
    assert props["BatchSize"] == 10


def test_outputs_give_both_urls(packaged):
    outputs = packaged["template"]["Outputs"]
    ws = outputs["WebSocketURL"]["Value"]["Fn::Sub"]
    http = outputs["HttpURL"]["Value"]["Fn::Sub"]
    assert ws.startswith("wss://${WebsocketAPI}.execute-api.${AWS::Region}.")
    assert ws.endswith("/prod")
    assert http.startswith("https://${RestAPI}.execute-api.${AWS::Region}.")
    assert http.endswith("/prod/")
    assert _ref(outputs["ConnectionsTableName"]["Value"]) == "ConnectionsTable"
    assert _ref(outputs["PushQueueUrl"]["Value"]) == "PushQueue"


def test_pushing_functions_know_the_websocket_api(packaged):
    resources = packaged["resources"]
    for function in templates.FUNCTIONS:
        variables = resources[templates._cfn_name(function)]["Properties"][
            "Environment"]["Variables"]
        if function in templates.PUSHING_FUNCTIONS:
            assert _ref(variables["WEBSOCKET_API_ID"]) == "WebsocketAPI"
        # staging/prod read the Pusher secret from SSM: it is never in the template
        assert "PUSHER_SECRET" not in variables
        assert variables["PUSHER_SECRET_PARAMETER"] == "/realtime/prod/pusher-secret"


def test_authorizers_are_small_fast_and_log_only(packaged):
    resources = packaged["resources"]
    for function in ("jwt_auth", "ws_authorizer"):
        props = resources[templates._cfn_name(function)]["Properties"]
        assert props["MemorySize"] <= 256 and props["Timeout"] <= 5
        role = resources[templates._cfn_name(f"{function}_role")]["Properties"]
        actions = {a for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]
                   for a in s["Action"]}
        assert actions == {"logs:CreateLogStream", "logs:PutLogEvents"}


def test_role_policies_are_pinned_to_this_stack(packaged):
    roles = {name: r for name, r in packaged["resources"].items()
             if r["Type"] == "AWS::IAM::Role"}
    assert len(roles) == len(templates.FUNCTIONS)
    for name, role in roles.items():
        for policy in role["Properties"]["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                for resource in statement["Resource"]:
                    assert resource != "*", name
                    arn = resource["Fn::Sub"]
                    assert arn.startswith("arn:${AWS::Partition}:")
                    if ":apigateway:" in arn:  # API Gateway ARNs carry no account
                        assert arn == "arn:${AWS::Partition}:apigateway:${AWS::Region}::/apis"
                        continue
                    assert ":${AWS::Region}:${AWS::AccountId}:" in arn
                    if ":execute-api:" in arn:  # POST: pushes; DELETE: closing a refused
                        # Pusher connection (chalicelib.dialects.pusher.socket)
                        assert any(f"${{WebsocketAPI}}/prod/{method}/@connections/*" in arn
                                   for method in ("POST", "DELETE"))


def test_log_groups_keep_the_stage_retention(packaged):
    groups = {name: r["Properties"] for name, r in packaged["resources"].items()
              if r["Type"] == "AWS::Logs::LogGroup"}
    assert len(groups) == len(templates.FUNCTIONS)
    assert {g["RetentionInDays"] for g in groups.values()} == {90}


def test_lambda_zip_holds_runtime_dependencies_only_and_stays_small(packaged):
    zip_path = packaged["dir"] / "deployment.zip"
    names = package.top_level_names(zip_path)
    assert "app.py" in names and "chalicelib" in names and "jwt" in names and "pusher" in names
    reference = package.reference_zip(package.ROOT / "build" / "reference")
    report = package.check_zip(zip_path, reference)
    print("\n" + report.describe())
    assert report.forbidden == []
    # issue 12's 8.5 MiB + httptools' 0.47 MiB (issue 11: the push sender's answer parser)
    assert report.zip_bytes <= package.MAX_ZIP_BYTES == 9 * 1024 * 1024
    assert report.ok


def test_zip_check_flags_development_packages(tmp_path):
    import zipfile

    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("app.py", "")
        archive.writestr("boto3/__init__.py", "")
        archive.writestr("moto-5.2.5.dist-info/METADATA", "")
    report = package.check_zip(bad, bad)
    assert report.forbidden == ["boto3", "moto-5.2.5.dist-info"]
    assert not report.ok


def test_terraform_format_packages_the_same_app(tmp_path):
    target = package.chalice_package(STAGE, tmp_path, pkg_format="terraform")
    terraform = json.loads((target / "chalice.tf.json").read_text())
    resources = terraform["resource"]
    cfg = templates.load_stage(STAGE)
    names = {r["function_name"] for r in resources["aws_lambda_function"].values()}
    assert names == {cfg.function_name(f) for f in templates.FUNCTIONS}
    # the README's Terraform override targets these two resources by name
    assert resources["aws_apigatewayv2_route"]["websocket_connect_route"]["route_key"] == \
        "$connect"
    assert "push_worker-sqs-event-source" in resources["aws_lambda_event_source_mapping"]
    assert (target / "deployment.zip").exists()


def test_make_package_reports_size_and_lint(packaged, prod_package_lint, monkeypatch, capsys):
    # `make package`'s entry point on the session's package (packaging and linting it once
    # per session)
    calls, linted = [], []

    def already_packaged(stage, out_dir, *, pkg_format="cloudformation", project_dir=None):
        calls.append((stage, pkg_format))
        return packaged["dir"]

    def already_linted(template):
        linted.append(template)
        return prod_package_lint

    monkeypatch.setattr(package, "chalice_package", already_packaged)
    monkeypatch.setattr(package, "cfn_lint", already_linted)
    assert package.main(["--stage", STAGE]) == 0
    out = capsys.readouterr().out
    assert calls == [(STAGE, "cloudformation")]
    assert linted == [packaged["dir"] / "sam.json"]
    assert "Lambda zip:" in out and "ratio:" in out and "9.00 MiB: within" in out
    assert "cfn-lint:        passed" in out


# --- issue 9 item 8: deploy hardening -------------------------------------------------------

def test_cfn_lint_applies_the_sam_transform(packaged, tmp_path):
    # SAM passes FunctionResponseTypes through to AWS::Lambda::EventSourceMapping; only the
    # transformed template meets the CloudFormation schema that knows its allowed values
    broken = copy.deepcopy(packaged["template"])
    sqs = broken["Resources"]["PushWorker"]["Properties"]["Events"][templates.SQS_EVENT_NAME]
    sqs["Properties"]["FunctionResponseTypes"] = ["ReportBatchItemFailure"]  # no final s
    path = tmp_path / "sam.json"
    path.write_text(json.dumps(broken))
    result = package.cfn_lint(path)
    assert result.returncode != 0
    assert "'ReportBatchItemFailure' is not one of ['ReportBatchItemFailures']" in result.stdout
    assert "sam.transformed.json" in result.stdout


def test_the_transformed_template_has_the_event_source_mapping(packaged):
    transformed = package.sam_transform(packaged["template"])
    mappings = [r["Properties"] for name, r in transformed["Resources"].items()
                if r["Type"] == "AWS::Lambda::EventSourceMapping"
                and name != "RegistryStreamEventSource"]  # ours, checked above
    assert len(mappings) == 1
    assert mappings[0]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mappings[0]["EventSourceArn"] == {"Fn::Sub": "${PushQueue.Arn}"}


def test_a_template_the_sam_transform_refuses_fails_lint(packaged, tmp_path):
    broken = copy.deepcopy(packaged["template"])
    broken["Resources"]["PushWorker"]["Properties"]["Events"][templates.SQS_EVENT_NAME][
        "Type"] = "NotAnEventType"
    path = tmp_path / "sam.json"
    path.write_text(json.dumps(broken))
    result = package.cfn_lint(path)
    assert result.returncode != 0
    assert result.stdout.startswith("SAM transform failed:")


def test_table_and_queues_outlive_the_stack(packaged):
    standalone = templates.infrastructure_template(packaged["cfg"])["Resources"]
    for resources in (packaged["resources"], standalone):
        for name in ("ConnectionsTable", "PushQueue", "PushDeadLetterQueue"):
            assert resources[name]["DeletionPolicy"] == "RetainExceptOnCreate", name
            assert resources[name]["UpdateReplacePolicy"] == "Retain", name


def _add_route(template, route_key):
    changed = copy.deepcopy(template)
    route = copy.deepcopy(changed["Resources"]["WebsocketMessageRoute"])
    route["Properties"]["RouteKey"] = route_key
    changed["Resources"]["WebsocketCustomRoute"] = route
    return changed


def test_stage_deployment_follows_the_routes(packaged):
    template = packaged["template"]
    resources = packaged["resources"]
    deployment_id = _ref(resources["WebsocketAPIStage"]["Properties"]["DeploymentId"])
    routes = {name for name, r in resources.items() if r["Type"] == "AWS::ApiGatewayV2::Route"}
    assert routes <= set(resources[deployment_id]["DependsOn"])
    # the same API keeps its deployment: no redeployment on every package
    same = templates.pin_websocket_deployment(template)
    assert same["Resources"]["WebsocketAPIStage"] == resources["WebsocketAPIStage"]

    # a new route: a new deployment, taken after the route exists
    added = templates.pin_websocket_deployment(_add_route(template, "typing"))
    new_id = _ref(added["Resources"]["WebsocketAPIStage"]["Properties"]["DeploymentId"])
    assert new_id != deployment_id and new_id.startswith("WebsocketAPIDeployment")
    assert deployment_id not in added["Resources"]
    assert "WebsocketCustomRoute" in added["Resources"][new_id]["DependsOn"]
    assert added["Resources"][new_id]["Type"] == "AWS::ApiGatewayV2::Deployment"

    # a changed route (another integration target) also redeploys
    changed = copy.deepcopy(template)
    changed["Resources"]["WebsocketMessageRoute"]["Properties"]["Target"] = {
        "Fn::Join": ["/", ["integrations", {"Ref": "WebsocketDisconnectAPIIntegration"}]]}
    changed = templates.pin_websocket_deployment(changed)
    assert _ref(changed["Resources"]["WebsocketAPIStage"]["Properties"]["DeploymentId"]) \
        not in (deployment_id, new_id)


def test_packaged_template_with_a_new_route_still_lints(packaged, tmp_path):
    path = tmp_path / "sam.json"
    path.write_text(json.dumps(templates.pin_websocket_deployment(
        _add_route(packaged["template"], "typing"))))
    result = package.cfn_lint(path)
    assert result.returncode == 0, result.stdout


def test_zip_has_no_bytecode_and_is_reproducible(packaged, tmp_path):
    import hashlib
    import os
    import subprocess
    import sys

    # what a test run (or any import without PYTHONDONTWRITEBYTECODE) leaves behind
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", "import app"], cwd=package.ROOT, env=env,
                   check=True)
    assert list((package.ROOT / "chalicelib").rglob("__pycache__/*.pyc"))

    target = package.chalice_package(STAGE, tmp_path)
    zip_path = target / "deployment.zip"
    with zipfile.ZipFile(zip_path) as archive:
        assert not [n for n in archive.namelist() if package.is_bytecode(n)]
    assert hashlib.sha256(zip_path.read_bytes()).hexdigest() == hashlib.sha256(
        (packaged["dir"] / "deployment.zip").read_bytes()).hexdigest()
    assert (target / "sam.json").read_text() == (packaged["dir"] / "sam.json").read_text()


def test_zip_check_flags_bytecode(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("app.py", "")
        archive.writestr("chalicelib/delivery/push.py", "")
        archive.writestr("chalicelib/websocket/__pycache__/push.cpython-311.pyc", "")
        archive.writestr("jwt/api_jwt.pyc", "")
    report = package.check_zip(bad, bad)
    assert report.bytecode == ["chalicelib/websocket/__pycache__/push.cpython-311.pyc",
                               "jwt/api_jwt.pyc"]
    assert report.forbidden == []
    assert not report.ok
    assert "BYTECODE in the zip (2 entries)" in report.describe()


def test_ws_authorizer_reserved_concurrency_is_packaged(tmp_path):
    import shutil

    project = tmp_path / "project"
    project.mkdir()
    for name in ("app.py", "requirements.txt"):
        shutil.copy2(package.ROOT / name, project / name)
    shutil.copytree(package.ROOT / "chalicelib", project / "chalicelib")
    shutil.copytree(package.ROOT / ".chalice", project / ".chalice",
                    ignore=shutil.ignore_patterns("deployed"))  # deployments: pip cache
    config_path = project / ".chalice" / "config.json"
    config = json.loads(config_path.read_text())
    config["stages"][STAGE]["lambda_functions"]["ws_authorizer"]["reserved_concurrency"] = 50
    config_path.write_text(json.dumps(config))

    assert templates.load_stage(STAGE, project).authorizer_reserved_concurrency == 50
    target = package.chalice_package(STAGE, tmp_path / "out", project_dir=project)
    resources = json.loads((target / "sam.json").read_text())["Resources"]
    reserved = {name: r["Properties"].get("ReservedConcurrentExecutions")
                for name, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
    assert reserved.pop("WsAuthorizer") == 50
    assert set(reserved.values()) == {None}  # the other functions share the account's pool


@pytest.mark.parametrize("value", [0, -1, "10", 2.5, True])
def test_an_invalid_reserved_concurrency_is_refused(tmp_path, value):
    import shutil

    shutil.copytree(package.ROOT / ".chalice", tmp_path / ".chalice",
                    ignore=shutil.ignore_patterns("deployed", "deployments"))
    config_path = tmp_path / ".chalice" / "config.json"
    config = json.loads(config_path.read_text())
    config["stages"][STAGE]["lambda_functions"]["ws_authorizer"]["reserved_concurrency"] = value
    config_path.write_text(json.dumps(config))
    with pytest.raises(SystemExit, match="reserved_concurrency must be a whole number >= 1"):
        templates.load_stage(STAGE, tmp_path)


def test_the_websocket_api_is_named_as_the_functions_look_it_up(packaged, monkeypatch):
    from chalicelib import settings

    cfg = packaged["cfg"]
    assert packaged["resources"]["WebsocketAPI"]["Properties"]["Name"] == \
        cfg.websocket_api_name
    for name, value in cfg.environment.items():
        monkeypatch.setenv(name, value)
    settings.reset()
    try:
        assert settings.websocket_settings().api_name == cfg.websocket_api_name
    finally:
        settings.reset()


def test_authorizer_refusals_carry_the_stages_cors_headers(packaged):
    """API Gateway's own 401/403/4xx/5xx answers (jwt_auth's refusals) carry the stage's CORS
    headers, or a browser page cannot read them; SAM writes them into the API's definition, so
    the stage is redeployed with them."""
    origin = packaged["cfg"].environment["CORS_ALLOW_ORIGIN"]
    transformed = package.sam_transform(packaged["template"])
    (api,) = [r for r in transformed["Resources"].values() if r["Type"] == "AWS::ApiGateway::RestApi"]
    responses = api["Properties"]["Body"]["x-amazon-apigateway-gateway-responses"]
    assert set(responses) == set(templates.CORS_GATEWAY_RESPONSES)
    for response in responses.values():
        headers = response["responseParameters"]
        assert headers["gatewayresponse.header.Access-Control-Allow-Origin"] == f"'{origin}'"
        assert headers["gatewayresponse.header.Vary"] == "'Origin'"


def test_a_stage_without_cors_origin_adds_no_gateway_responses(packaged):
    cfg = packaged["cfg"]
    bare = templates.StageConfig(**{**cfg.__dict__, "environment": {
        k: v for k, v in cfg.environment.items() if k != "CORS_ALLOW_ORIGIN"}})
    assert templates.cors_response_headers(bare) == {}
    assert "RestAPI" not in templates.merge_template(bare)["Resources"]


def test_registry_stream_reads_only_ttl_deletes_of_the_table(packaged):
    mapping = packaged["resources"]["RegistryStreamEventSource"]
    assert mapping["Type"] == "AWS::Lambda::EventSourceMapping"
    props = mapping["Properties"]
    assert props["EventSourceArn"] == {"Fn::GetAtt": ["ConnectionsTable", "StreamArn"]}
    assert props["FunctionName"] == {"Ref": templates._cfn_name("registry_stream")}
    pattern = json.loads(props["FilterCriteria"]["Filters"][0]["Pattern"])
    assert pattern == {"eventName": ["REMOVE"], "userIdentity": {
        "type": ["Service"], "principalId": ["dynamodb.amazonaws.com"]}}
