"""``make deploy``'s AWS calls, offline: moto for CloudFormation, Lambda, CloudWatch Logs, SSM
and IAM; a botocore Stubber for API Gateway V2 (moto lacks ``GetAuthorizers`` and
``CreateDeployment``), which also proves that a converged deployment gets no write call at all.
``chalice deploy`` itself is replaced by a stand-in that creates what it would (the functions,
the SQS event source mapping) and writes ``.chalice/deployed/<stage>.json``.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from infra import deploy, templates

ROOT = Path(__file__).resolve().parents[2]
STAGE = "prod"
REGION = "us-east-1"
ACCOUNT = "123456789012"
API_ID = "wsapi1234"
AUTHORIZER_ID = "auth567"


@pytest.fixture
def aws(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION,
                        "AWS_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


@pytest.fixture
def project(tmp_path):
    """A copy of the project's .chalice/ (config and policy files)."""
    shutil.copytree(ROOT / ".chalice", tmp_path / ".chalice",
                    ignore=shutil.ignore_patterns("deployments", "deployed"))
    return tmp_path


class FakeChaliceDeploy:
    """Does to (moto) AWS what ``chalice deploy --stage prod`` does for our concern."""

    def __init__(self, project: Path, cfg: templates.StageConfig):
        self.project, self.cfg, self.calls = project, cfg, []
        self.fail = False

    def rest_api(self) -> str:
        """The REST API chalice deploy makes: one route, deployed to the stage (moto)."""
        if getattr(self, "_rest_api_id", None) is None:
            api = boto3.client("apigateway", region_name=REGION)
            self._rest_api_id = api.create_rest_api(name=f"realtime-{STAGE}")["id"]
            root = api.get_resources(restApiId=self._rest_api_id)["items"][0]["id"]
            api.put_method(restApiId=self._rest_api_id, resourceId=root, httpMethod="GET",
                           authorizationType="NONE")
            api.put_integration(restApiId=self._rest_api_id, resourceId=root,
                                httpMethod="GET", type="MOCK")
            api.create_deployment(restApiId=self._rest_api_id, stageName=STAGE)
        return self._rest_api_id

    def __call__(self, command, check, cwd, env):
        assert command[-3:] == ["deploy", "--stage", STAGE] and check
        assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # chalice imports app.py: no __pycache__
        # app.py names the worker's queue at import, from chalice's environment: the stage's
        assert env["STAGE"] == STAGE and env["PUSH_QUEUE_NAME"] == self.cfg.queue_name
        self.calls.append(command)
        if self.fail:  # e.g. an expired session token half-way through
            raise subprocess.CalledProcessError(1, command)
        lam, iam, sqs = (boto3.client(s, region_name=REGION) for s in ("lambda", "iam", "sqs"))
        if len(self.calls) > 1:  # chalice resets the environment to config.json's
            for function in templates.FUNCTIONS:
                lam.update_function_configuration(
                    FunctionName=self.cfg.function_name(function),
                    Environment={"Variables": self.cfg.environment})
            return
        role = iam.create_role(RoleName="realtime-prod", AssumeRolePolicyDocument="{}")
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("app.py", "")
        resources = []
        for function in templates.FUNCTIONS:
            arn = lam.create_function(
                FunctionName=self.cfg.function_name(function), Runtime="python3.11",
                Role=role["Role"]["Arn"], Handler=f"app.{function}",
                Code={"ZipFile": code.getvalue()},
                Environment={"Variables": self.cfg.environment})["FunctionArn"]
            resources.append({"name": function, "resource_type": "lambda_function",
                              "lambda_arn": arn})
        queue_url = sqs.get_queue_url(QueueName=self.cfg.queue_name)["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        mapping = lam.create_event_source_mapping(
            EventSourceArn=queue_arn, FunctionName=self.cfg.function_name("push_worker"),
            BatchSize=10)
        resources += [
            {"name": "push_worker-sqs-event-source", "resource_type": "sqs_event",
             "queue_arn": queue_arn, "event_uuid": mapping["UUID"],
             "queue": self.cfg.queue_name, "lambda_arn": resources[-1]["lambda_arn"]},
            {"name": "websocket_api", "resource_type": "websocket_api",
             "websocket_api_id": API_ID,
             "websocket_api_url": f"wss://{API_ID}.execute-api.{REGION}.amazonaws.com/prod/"},
            {"name": "rest_api", "resource_type": "rest_api", "rest_api_id": self.rest_api(),
             "rest_api_url": f"https://{self.rest_api()}.execute-api.{REGION}.amazonaws.com/prod/"},
        ]
        deployed = self.project / ".chalice" / "deployed"
        deployed.mkdir(exist_ok=True)
        (deployed / f"{STAGE}.json").write_text(json.dumps(
            {"resources": resources, "schema_version": "2.0", "backend": "api"}))


@pytest.fixture
def setup(aws, project):
    cfg = templates.load_stage(STAGE, project)
    apigw = boto3.client("apigatewayv2", region_name=REGION)
    stubber = Stubber(apigw)
    stubber.activate()

    def factory(service):
        return apigw if service == "apigatewayv2" else boto3.client(service,
                                                                   region_name=REGION)

    chalice = FakeChaliceDeploy(project, cfg)
    lines = []
    deployer = deploy.Deployer(cfg, factory, project_dir=project, run=chalice,
                               echo=lines.append)
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name=cfg.secret_parameter, Value="pusher-secret", Type="SecureString")
    return {"cfg": cfg, "deployer": deployer, "stubber": stubber, "chalice": chalice,
            "lines": lines, "factory": factory}


def _authorizer_uri(cfg):
    function = (f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:"
                f"{cfg.function_name('ws_authorizer')}")
    return (f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/{function}"
            "/invocations")


def _connect_route(**auth):
    return {"Items": [
        {"RouteId": "r-default", "RouteKey": "$default", "AuthorizationType": "NONE"},
        {"RouteId": "r-connect", "RouteKey": "$connect", **auth},
    ]}


def expect_first_attach(stubber, cfg, route_auth=None):
    stubber.add_response("get_authorizers", {"Items": []}, {"ApiId": API_ID})
    stubber.add_response("create_authorizer", {"AuthorizerId": AUTHORIZER_ID}, {
        "ApiId": API_ID, "Name": cfg.authorizer_name, "AuthorizerType": "REQUEST",
        "AuthorizerUri": _authorizer_uri(cfg), "IdentitySource": []})
    expect_route_update(stubber, route_auth or {"AuthorizationType": "NONE"})


def expect_route_update(stubber, current_auth):
    stubber.add_response("get_routes", _connect_route(**current_auth), {"ApiId": API_ID})
    stubber.add_response("update_route", {}, {
        "ApiId": API_ID, "RouteId": "r-connect", "AuthorizationType": "CUSTOM",
        "AuthorizerId": AUTHORIZER_ID})
    stubber.add_response("create_deployment", {"DeploymentId": "dep1"}, {
        "ApiId": API_ID, "StageName": STAGE, "Description": ANY})


def expect_converged(stubber, cfg):
    stubber.add_response("get_authorizers", {"Items": [{
        "AuthorizerId": AUTHORIZER_ID, "Name": cfg.authorizer_name, "AuthorizerType": "REQUEST",
        "AuthorizerUri": _authorizer_uri(cfg), "IdentitySource": []}]}, {"ApiId": API_ID})
    stubber.add_response("get_routes", _connect_route(
        AuthorizationType="CUSTOM", AuthorizerId=AUTHORIZER_ID), {"ApiId": API_ID})


def test_first_deploy_builds_everything_from_an_empty_account(setup):
    cfg, deployer, stubber = setup["cfg"], setup["deployer"], setup["stubber"]
    expect_first_attach(stubber, cfg)

    endpoints = deployer.run()

    stubber.assert_no_pending_responses()
    assert endpoints == {"WebSocket": f"wss://{API_ID}.execute-api.{REGION}.amazonaws.com/prod/",
                         "HTTP": f"https://{setup['chalice'].rest_api()}.execute-api."
                                 f"{REGION}.amazonaws.com/prod/"}
    assert any(f"wss://{API_ID}" in line for line in setup["lines"])
    assert any(f'"WEBSOCKET_API_ID": "{API_ID}"' in line for line in setup["lines"])
    assert len(setup["chalice"].calls) == 1

    # the infrastructure stack: table with its TTL and index, queue with its DLQ
    cfn = boto3.client("cloudformation", region_name=REGION)
    stack = cfn.describe_stacks(StackName=cfg.infrastructure_stack_name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    table = boto3.client("dynamodb", region_name=REGION).describe_table(
        TableName=cfg.table_name)["Table"]
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["audience-index"]
    sqs = boto3.client("sqs", region_name=REGION)
    attributes = sqs.get_queue_attributes(
        QueueUrl=sqs.get_queue_url(QueueName=cfg.queue_name)["QueueUrl"],
        AttributeNames=["All"])["Attributes"]
    assert json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"].endswith(
        f":{cfg.queue_name}-dlq")

    lam = boto3.client("lambda", region_name=REGION)
    authorizer = cfg.function_name("ws_authorizer")
    statements = json.loads(lam.get_policy(FunctionName=authorizer)["Policy"])["Statement"]
    assert [s["Condition"]["ArnLike"]["AWS:SourceArn"] for s in statements] == [
        f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/authorizers/{AUTHORIZER_ID}"]
    uuid = deployer.deployed().sqs_event_uuid
    assert lam.get_event_source_mapping(UUID=uuid)["FunctionResponseTypes"] == [
        "ReportBatchItemFailures"]
    for function in templates.PUSHING_FUNCTIONS:
        variables = lam.get_function_configuration(
            FunctionName=cfg.function_name(function))["Environment"]["Variables"]
        assert variables["WEBSOCKET_API_ID"] == API_ID
        assert variables["CONNECTIONS_TABLE"] == cfg.table_name  # the rest is kept
    groups = boto3.client("logs", region_name=REGION).describe_log_groups(
        logGroupNamePrefix=f"/aws/lambda/realtime-{STAGE}")["logGroups"]
    assert {g["logGroupName"]: g["retentionInDays"] for g in groups} == {
        f"/aws/lambda/{cfg.function_name(f)}": 90 for f in templates.FUNCTIONS}


def test_second_run_changes_nothing(setup):
    cfg, deployer, stubber = setup["cfg"], setup["deployer"], setup["stubber"]
    expect_first_attach(stubber, cfg)
    deployer.run()
    stubber.assert_no_pending_responses()
    lam = boto3.client("lambda", region_name=REGION)
    policy_before = lam.get_policy(FunctionName=cfg.function_name("ws_authorizer"))["Policy"]

    # same deployer state, run the converging part again: reads only (a Stubber raises on
    # any call not queued, so an update_route or create_deployment would fail this test)
    deployer.changes.clear()
    expect_converged(stubber, cfg)
    deployer.run(attach_only=True)

    stubber.assert_no_pending_responses()
    assert deployer.changes == []
    assert "  nothing to change" in setup["lines"]
    assert lam.get_policy(FunctionName=cfg.function_name("ws_authorizer"))["Policy"] == \
        policy_before


def test_infrastructure_stack_update_without_changes_is_a_no_op(setup):
    deployer = setup["deployer"]
    assert deployer.deploy_infrastructure(waiter_delay=0) == "created"
    assert deployer.deploy_infrastructure(waiter_delay=0) == "unchanged"


def test_redeploy_reattaches_the_route_chalice_recreated(setup):
    cfg, deployer, stubber = setup["cfg"], setup["deployer"], setup["stubber"]
    expect_first_attach(stubber, cfg)
    deployer.run()

    # a second `make deploy`: chalice deletes and re-creates the routes (no authorizer) and
    # resets the environment; the authorizer, its permission and the mapping are kept
    deployer.changes.clear()
    stubber.add_response("get_authorizers", {"Items": [{
        "AuthorizerId": AUTHORIZER_ID, "Name": cfg.authorizer_name, "AuthorizerType": "REQUEST",
        "AuthorizerUri": _authorizer_uri(cfg), "IdentitySource": []}]}, {"ApiId": API_ID})
    expect_route_update(stubber, {"AuthorizationType": "NONE"})
    deployer.run()

    stubber.assert_no_pending_responses()
    assert len(setup["chalice"].calls) == 2
    assert "$connect route uses the authorizer" in deployer.changes
    assert f"stage {STAGE} redeployed" in deployer.changes
    assert not any(c.startswith(("authorizer", "permission", "push worker"))
                   for c in deployer.changes)


def test_a_drifted_authorizer_is_corrected_and_redeployed(setup):
    cfg, deployer, stubber = setup["cfg"], setup["deployer"], setup["stubber"]
    stubber.add_response("get_authorizers", {"Items": [{
        "AuthorizerId": AUTHORIZER_ID, "Name": cfg.authorizer_name, "AuthorizerType": "REQUEST",
        "AuthorizerUri": _authorizer_uri(cfg),
        "IdentitySource": ["route.request.header.Authorization"]}]}, {"ApiId": API_ID})
    stubber.add_response("update_authorizer", {}, {
        "ApiId": API_ID, "AuthorizerId": AUTHORIZER_ID, "AuthorizerType": "REQUEST",
        "AuthorizerUri": _authorizer_uri(cfg), "IdentitySource": []})
    stubber.add_response("get_routes", _connect_route(
        AuthorizationType="CUSTOM", AuthorizerId=AUTHORIZER_ID), {"ApiId": API_ID})
    stubber.add_response("create_deployment", {"DeploymentId": "dep2"}, {
        "ApiId": API_ID, "StageName": STAGE, "Description": ANY})
    deployer.deploy_infrastructure(waiter_delay=0)
    deployer.chalice_deploy()
    deployer.attach(deployer.deployed())
    stubber.assert_no_pending_responses()
    assert f"authorizer {cfg.authorizer_name} updated" in deployer.changes


def test_missing_secret_stops_before_anything_is_created(setup):
    cfg, deployer = setup["cfg"], setup["deployer"]
    boto3.client("ssm", region_name=REGION).delete_parameter(Name=cfg.secret_parameter)
    with pytest.raises(deploy.DeployError, match="aws ssm put-parameter --name "
                                                 "/realtime/prod/pusher-secret --type SecureString"):
        deployer.run()
    assert setup["chalice"].calls == []
    # no stack either: a stack with termination protection is not undone in one command
    cfn = boto3.client("cloudformation", region_name=REGION)
    assert cfn.list_stacks()["StackSummaries"] == []
    assert boto3.client("dynamodb", region_name=REGION).list_tables()["TableNames"] == []


def test_plain_string_secret_is_refused(setup):
    cfg, deployer = setup["cfg"], setup["deployer"]
    ssm = boto3.client("ssm", region_name=REGION)
    ssm.put_parameter(Name=cfg.secret_parameter, Value="x", Type="String", Overwrite=True)
    with pytest.raises(deploy.DeployError, match="not SecureString"):
        deployer.check_secret()


def test_missing_deployed_values_are_a_clear_error(setup):
    with pytest.raises(deploy.DeployError, match="did `chalice deploy` succeed"):
        setup["deployer"].deployed()


def test_main_without_a_region_fails_with_a_message(monkeypatch, capsys):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    assert deploy.main(["--stage", STAGE]) == 1
    assert "no AWS region" in capsys.readouterr().err


# --- issue 9 item 8: deploy hardening -------------------------------------------------------

@pytest.mark.parametrize("status", ["ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED"])
def test_a_stack_to_delete_says_to_lift_termination_protection_first(setup, status):
    cfg = setup["cfg"]
    cfn = boto3.client("cloudformation", region_name=REGION)
    stubber = Stubber(cfn)
    stubber.add_response("describe_stacks", {"Stacks": [{
        "StackName": cfg.infrastructure_stack_name, "StackStatus": status,
        "CreationTime": "2024-01-01T00:00:00Z", "EnableTerminationProtection": True}]},
        {"StackName": cfg.infrastructure_stack_name})
    deployer = deploy.Deployer(
        cfg, lambda service: cfn if service == "cloudformation" else setup["factory"](service),
        project_dir=setup["deployer"].project_dir, run=setup["chalice"], echo=print)
    with stubber, pytest.raises(deploy.DeployError) as caught:
        deployer.run()
    message = str(caught.value)
    name = cfg.infrastructure_stack_name
    lift = (f"aws cloudformation update-termination-protection "
            f"--no-enable-termination-protection --stack-name {name}")
    assert lift in message and f"aws cloudformation delete-stack --stack-name {name}" in message
    assert message.index(lift) < message.index("delete-stack")
    assert setup["chalice"].calls == []


def test_a_table_kept_from_a_deleted_stack_is_named_before_creating(setup):
    cfg, deployer = setup["cfg"], setup["deployer"]
    boto3.client("sqs", region_name=REGION).create_queue(QueueName=cfg.dlq_name)
    with pytest.raises(deploy.DeployError) as caught:
        deployer.deploy_infrastructure(waiter_delay=0)
    message = str(caught.value)
    assert f"queue {cfg.dlq_name} already exist" in message
    assert "--change-set-type IMPORT" in message
    cfn = boto3.client("cloudformation", region_name=REGION)
    assert cfn.list_stacks()["StackSummaries"] == []


def test_the_stack_keeps_table_and_queues_when_deleted(setup):
    cfg, deployer = setup["cfg"], setup["deployer"]
    deployer.deploy_infrastructure(waiter_delay=0)
    cfn = boto3.client("cloudformation", region_name=REGION)
    body = cfn.get_template(StackName=cfg.infrastructure_stack_name)["TemplateBody"]
    body = json.loads(body) if isinstance(body, str) else body
    for name in ("ConnectionsTable", "PushQueue", "PushDeadLetterQueue"):
        assert body["Resources"][name]["DeletionPolicy"] == templates.DELETION_POLICY
        assert body["Resources"][name]["UpdateReplacePolicy"] == "Retain"


def test_policy_files_in_another_partition_are_refused_before_anything(aws, project,
                                                                       monkeypatch):
    region = "cn-north-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    monkeypatch.setenv("AWS_REGION", region)
    cfg = templates.load_stage(STAGE, project)
    boto3.client("ssm", region_name=region).put_parameter(
        Name=cfg.secret_parameter, Value="pusher-secret", Type="SecureString")
    calls = []
    deployer = deploy.Deployer(cfg, lambda service: boto3.client(service, region_name=region),
                               project_dir=project, run=lambda *a, **k: calls.append(a),
                               echo=print)
    with pytest.raises(deploy.DeployError) as caught:
        deployer.run()
    assert "policy-prod-authorizer.json grants arn:aws:logs:" in str(caught.value)
    assert "cn-north-1 is in the aws-cn partition" in str(caught.value)
    assert calls == []
    assert boto3.client("cloudformation", region_name=region).list_stacks()[
        "StackSummaries"] == []

    for path in (project / ".chalice").glob("policy-*.json"):
        path.write_text(path.read_text().replace('"arn:aws:', '"arn:aws-cn:'))
    deployer.check_partition(region)  # no error: the files now name aws-cn
    with pytest.raises(deploy.DeployError, match="us-gov-west-1 is in the aws-us-gov"):
        deployer.check_partition("us-gov-west-1")


def test_chalice_deploy_zips_no_bytecode(setup):
    deployer = setup["deployer"]
    cache = deployer.project_dir / "chalicelib" / "websocket" / "__pycache__"
    cache.mkdir(parents=True)
    (cache / "push.cpython-311.pyc").write_bytes(b"\x00")
    (deployer.project_dir / "chalicelib" / "websocket" / "push.py").write_text("")
    deployer.deploy_infrastructure(waiter_delay=0)
    deployer.chalice_deploy()
    assert not cache.exists()
    assert (deployer.project_dir / "chalicelib" / "websocket" / "push.py").exists()


def test_pushes_survive_a_deploy_that_stopped_before_the_authorizer_step(setup, monkeypatch):
    cfg, deployer, stubber = setup["cfg"], setup["deployer"], setup["stubber"]
    expect_first_attach(stubber, cfg)
    deployer.run()

    # the next `make deploy`: chalice deploy resets every environment, then the session
    # expires before step 4 could put WEBSOCKET_API_ID back
    stubber.add_client_error("get_authorizers", "ExpiredTokenException", "expired")
    with pytest.raises(Exception, match="ExpiredToken"):
        deployer.run()
    lam = boto3.client("lambda", region_name=REGION)
    variables = lam.get_function_configuration(
        FunctionName=cfg.function_name("push_worker"))["Environment"]["Variables"]
    assert "WEBSOCKET_API_ID" not in variables

    # the push worker, with exactly that environment, still finds the API chalice made
    from chalicelib import settings
    from chalicelib.delivery import post

    api_id = boto3.client("apigatewayv2", region_name=REGION).create_api(
        Name=cfg.websocket_api_name, ProtocolType="WEBSOCKET",
        RouteSelectionExpression="$request.body.action")["ApiId"]
    for name in [n for n in __import__("os").environ if n.startswith("WEBSOCKET_")]:
        monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    settings.reset()
    post.reset_clients()
    try:
        assert post.management_endpoint() == \
            f"https://{api_id}.execute-api.{REGION}.amazonaws.com/{cfg.api_gateway_stage}"
    finally:
        settings.reset()
        post.reset_clients()


def test_main_reports_an_aws_failure_with_the_way_to_finish(monkeypatch, capsys):
    from botocore.exceptions import ClientError

    class Failing:
        def __init__(self, cfg, factory):
            pass

        def run(self, attach_only=False):
            raise ClientError({"Error": {"Code": "ExpiredTokenException",
                                         "Message": "expired"}}, "GetAuthorizers")

    monkeypatch.setattr(deploy, "Deployer", Failing)
    monkeypatch.setattr(deploy, "boto3_client_factory", lambda region: None)
    assert deploy.main(["--stage", STAGE]) == 1
    err = capsys.readouterr().err
    assert "deploy failed: An error occurred (ExpiredTokenException)" in err
    assert f"python -m infra.deploy --stage {STAGE} --attach-only" in err


def test_authorizer_refusals_carry_the_stages_cors_headers(setup):
    """A 401 from jwt_auth is API Gateway's own answer: without CORS headers on its gateway
    responses a browser page cannot read it (issue 9, item 7 on AWS)."""
    cfg, deployer, stubber = setup["cfg"], setup["deployer"], setup["stubber"]
    expect_first_attach(stubber, cfg)
    deployer.run()
    api = boto3.client("apigateway", region_name=REGION)
    rest_api_id = setup["chalice"].rest_api()
    origin = cfg.environment["CORS_ALLOW_ORIGIN"]
    for kind in templates.CORS_GATEWAY_RESPONSES:
        parameters = api.get_gateway_response(restApiId=rest_api_id,
                                              responseType=kind)["responseParameters"]
        assert parameters["gatewayresponse.header.Access-Control-Allow-Origin"] == f"'{origin}'"
        assert parameters["gatewayresponse.header.Vary"] == "'Origin'"
    deployments = api.get_deployments(restApiId=rest_api_id)["items"]
    assert len(deployments) == 2  # chalice's, then the one that publishes the responses
    assert any("CORS" in line for line in setup["lines"])
