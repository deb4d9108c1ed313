"""Custom domains (``stages.<stage>.infra.websocket_domain`` / ``rest_domain``): settings refused
with a clear message, the CloudFormation of both deploy paths (present only when configured,
cfn-lint clean also after the SAM transform), the WebSocket domain's CloudFront Function run in
Node and its rewritten request served by the local gateway to a real WebSocket client, and
``make deploy``'s domain stack (a botocore Stubber records every CloudFormation call: a second
run writes nothing, a changed API id updates the stack instead of making another).
"""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlencode

import pytest

from infra import deploy, package, templates

ROOT = Path(__file__).resolve().parents[2]
STAGE = "prod"
WS_CERT = "arn:aws:acm:us-east-1:123456789012:certificate/12345678-1234-1234-1234-123456789012"
REST_CERT = "arn:aws:acm:us-east-1:123456789012:certificate/87654321-4321-4321-4321-210987654321"
ZONE = "Z0123456789ABCDEFGHIJ"
WS_DOMAIN = {"name": "ws.example.com", "certificate_arn": WS_CERT, "hosted_zone_id": ZONE}
REST_DOMAIN = {"name": "api.example.com", "certificate_arn": REST_CERT}
DOMAIN_TYPES = {"AWS::CloudFront::Distribution", "AWS::CloudFront::Function",
                "AWS::ApiGateway::DomainName", "AWS::ApiGateway::BasePathMapping",
                "AWS::Route53::RecordSet", "AWS::ApiGatewayV2::DomainName",
                "AWS::ApiGatewayV2::ApiMapping"}


def project_with(tmp_path: Path, full: bool = False, env=None, **infra) -> Path:
    """A copy of the project's ``.chalice/`` (and, with ``full``, what ``chalice package``
    needs) whose prod stage has ``infra`` settings added."""
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    if full:
        for name in ("app.py", "requirements.txt"):
            shutil.copy2(ROOT / name, project / name)
        shutil.copytree(ROOT / "chalicelib", project / "chalicelib",
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / ".chalice", project / ".chalice",
                    ignore=shutil.ignore_patterns("deployed", "deployments"), dirs_exist_ok=True)
    path = project / ".chalice" / "config.json"
    config = json.loads(path.read_text())
    config["stages"][STAGE]["infra"].update(infra)
    config["stages"][STAGE]["environment_variables"].update(env or {})
    path.write_text(json.dumps(config))
    return project


def stage_with(tmp_path: Path, **infra) -> templates.StageConfig:
    return templates.load_stage(STAGE, project_with(tmp_path, **infra))


def types_of(resources):
    return {r.get("Type") for r in resources.values()}


# --- settings ----------------------------------------------------------------------------------

def test_no_domain_resources_or_outputs_without_settings():
    cfg = templates.load_stage(STAGE)
    assert cfg.websocket_domain is None and cfg.rest_domain is None
    merged = templates.merge_template(cfg, region="eu-west-1")
    assert not types_of(merged["Resources"]) & DOMAIN_TYPES
    assert not {"WebSocketDomainURL", "PusherJsOptions", "HttpDomainURL"} & set(
        merged["Outputs"])
    assert templates.describe_domains(cfg) == []


BAD_SETTINGS = [
    ("websocket_domain", "ws.example.com", "must be an object"),
    ("websocket_domain", {**WS_DOMAIN, "stage": "prod"}, "unknown key(s) stage"),
    ("websocket_domain", {**WS_DOMAIN, "name": "WS.example.com"}, ".name must be a host name"),
    ("websocket_domain", {**WS_DOMAIN, "name": "localhost"}, ".name must be a host name"),
    ("websocket_domain", {**WS_DOMAIN, "name": "*.example.com"}, ".name must be a host name"),
    ("websocket_domain", {**WS_DOMAIN, "name": "ws.example.com."}, ".name must be a host name"),
    ("websocket_domain", {**WS_DOMAIN, "name": "-ws.example.com"}, ".name must be a host name"),
    ("rest_domain", {**REST_DOMAIN, "name": "a" * 64 + ".example.com"},
     ".name must be a host name"),
    ("rest_domain", {"name": "api.example.com"}, ".certificate_arn must be an ACM certificate"),
    ("rest_domain", {**REST_DOMAIN, "certificate_arn":
                     "arn:aws:iam::123456789012:server-certificate/api"},
     ".certificate_arn must be an ACM certificate"),
    ("rest_domain", {**REST_DOMAIN, "certificate_arn": WS_CERT.replace("123456789012", "1234")},
     ".certificate_arn must be an ACM certificate"),
    ("rest_domain", {**REST_DOMAIN, "hosted_zone_id": "example.com"},
     ".hosted_zone_id must be a Route 53 hosted zone id"),
]


@pytest.mark.parametrize("key, value, message", BAD_SETTINGS)
def test_bad_settings_are_refused_with_a_clear_message(tmp_path, key, value, message):
    with pytest.raises(SystemExit) as caught:
        stage_with(tmp_path, **{key: value})
    assert f"stage {STAGE}: infra.{key}" in str(caught.value)
    assert message in str(caught.value)


def test_both_domains_cannot_share_a_name(tmp_path):
    with pytest.raises(SystemExit, match="name the same domain 'ws.example.com'"):
        stage_with(tmp_path, websocket_domain=WS_DOMAIN,
                   rest_domain={**REST_DOMAIN, "name": "ws.example.com"})


def test_a_pusher_key_that_cannot_travel_in_the_path_is_refused(tmp_path):
    project = project_with(tmp_path, env={"PUSHER_KEY": "key/with slash"},
                           websocket_domain=WS_DOMAIN)
    with pytest.raises(SystemExit, match="needs PUSHER_KEY made of letters, digits"):
        templates.load_stage(STAGE, project)


def test_certificates_must_be_where_aws_reads_them(tmp_path):
    cfg = stage_with(tmp_path, websocket_domain=WS_DOMAIN, rest_domain=REST_DOMAIN)
    templates.check_domain_regions(cfg, "us-east-1")  # both in us-east-1: fine there
    with pytest.raises(SystemExit) as caught:
        templates.check_domain_regions(cfg, "eu-west-1")
    assert "infra.rest_domain.certificate_arn is in us-east-1" in str(caught.value)
    assert "request or import the certificate for api.example.com in eu-west-1" in str(
        caught.value)

    elsewhere = WS_CERT.replace("us-east-1", "eu-west-1")
    cfg = stage_with(tmp_path, websocket_domain={**WS_DOMAIN, "certificate_arn": elsewhere})
    with pytest.raises(SystemExit, match="CloudFront distribution takes certificates from "
                                         "us-east-1 only"):
        templates.check_domain_regions(cfg, "eu-west-1")


def test_make_package_checks_the_certificate_against_its_region(tmp_path, monkeypatch):
    project = project_with(tmp_path, rest_domain=REST_DOMAIN)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with pytest.raises(SystemExit, match="rest_domain.certificate_arn is in us-east-1"):
        package.write_merge_template(STAGE, tmp_path / "out", project)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    written = json.loads(package.write_merge_template(STAGE, tmp_path / "out",
                                                      project).read_text())
    assert templates.REST_DOMAIN_ID in written["Resources"]


# --- the WebSocket domain's path function, run in Node ------------------------------------------

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")


def run_path_function(stage, uri, query=None):
    """The viewer-request function as CloudFront runs it: ``handler(event)`` on a
    CloudFront Functions event (querystring as ``{name: {value}}``)."""
    code = templates.websocket_path_function_code(stage)
    event = {"version": "1.0", "context": {"eventType": "viewer-request"},
             "viewer": {"ip": "192.0.2.10"},
             "request": {"method": "GET", "uri": uri,
                         "querystring": {k: {"value": v} for k, v in (query or {}).items()},
                         "headers": {"host": {"value": "ws.example.com"},
                                     "upgrade": {"value": "websocket"}},
                         "cookies": {}}}
    script = code + ("\nprocess.stdout.write(JSON.stringify("
                     "handler(JSON.parse(process.argv[1]))));")
    done = subprocess.run([NODE, "-e", script, json.dumps(event)], capture_output=True,
                          text=True, timeout=30, check=True)
    return json.loads(done.stdout)


PUSHER_JS_QUERY = {"protocol": "7", "client": "js", "version": "8.4.0", "flash": "false"}


@needs_node
@pytest.mark.parametrize("uri", ["/app/prod-key", "/app/prod-key/"])
def test_pusher_js_path_reaches_the_stage_with_the_key_as_app_key(uri):
    request = run_path_function("prod", uri, PUSHER_JS_QUERY)
    assert request["uri"] == "/prod"
    assert {k: v["value"] for k, v in request["querystring"].items()} == {
        **PUSHER_JS_QUERY, "app_key": "prod-key"}


@needs_node
def test_native_clients_connect_at_the_root_with_their_token():
    request = run_path_function("prod", "/", {"token": "eyJ.x.y"})
    assert request["uri"] == "/prod"
    assert request["querystring"] == {"token": {"value": "eyJ.x.y"}}


@needs_node
def test_a_clients_own_app_key_is_kept_as_the_local_gateway_keeps_it():
    request = run_path_function("prod", "/app/prod-key", {**PUSHER_JS_QUERY, "app_key": "mine"})
    assert request["querystring"]["app_key"] == {"value": "mine"}


@needs_node
@pytest.mark.parametrize("uri", ["/prod", "/app", "/app/", "/app/a/b", "/favicon.ico",
                                 "/app/bad%2Fkey", "/apps/100001/events"])
def test_any_other_path_gets_403(uri):
    assert run_path_function("prod", uri, PUSHER_JS_QUERY) == {
        "statusCode": 403, "statusDescription": "Forbidden"}


# the rewritten request, served by the local gateway (the app's real ws_authorizer, $connect
# and pusher_hello): what API Gateway gets from CloudFront
from tests.integration.test_pusher_socket import gateway  # noqa: E402,F401
from tests.support.websocket import aws_env, serial_registry  # noqa: E402,F401


def through_the_domain(gw, uri, query):
    request = run_path_function(gw.config.stage, uri, query)
    assert "statusCode" not in request, request
    rewritten = urlencode({k: v["value"] for k, v in request["querystring"].items()})
    return f"ws://127.0.0.1:{gw.port}{request['uri']}?{rewritten}"


@needs_node
def test_pusher_js_through_the_domain_gets_connection_established(gateway):  # noqa: F811
    from websockets.sync.client import connect

    with connect(through_the_domain(gateway, "/app/app-key", PUSHER_JS_QUERY)) as ws:
        frame = json.loads(ws.recv(timeout=5))
    assert frame["event"] == "pusher:connection_established", frame
    assert json.loads(frame["data"])["activity_timeout"] <= 120


@needs_node
def test_a_wrong_key_through_the_domain_gets_pushers_4001(gateway):  # noqa: F811
    from websockets.sync.client import connect

    with connect(through_the_domain(gateway, "/app/wrong-key", PUSHER_JS_QUERY)) as ws:
        frame = json.loads(ws.recv(timeout=5))
    assert frame["event"] == "pusher:error"
    assert json.loads(frame["data"])["code"] == 4001


# --- CloudFormation ----------------------------------------------------------------------------

def test_only_the_configured_domain_is_added(tmp_path):
    cfg = stage_with(tmp_path, rest_domain=REST_DOMAIN)
    resources = templates.merge_template(cfg, region="us-east-1")["Resources"]
    assert types_of(resources) & DOMAIN_TYPES == {"AWS::ApiGateway::DomainName",
                                                  "AWS::ApiGateway::BasePathMapping"}
    stack = templates.domain_template(cfg)
    assert set(stack["Parameters"]) == {"RestAPI"}
    assert set(stack["Outputs"]) == {"HttpDomainURL", "PusherServerHost", "HttpDomainTarget",
                                     "HttpDomainTargetZone"}


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("domains")
    project = project_with(tmp, full=True, websocket_domain=WS_DOMAIN,
                           rest_domain={**REST_DOMAIN, "hosted_zone_id": ZONE})
    target = package.chalice_package(STAGE, tmp / "out", project_dir=project)
    template = json.loads((target / "sam.json").read_text())
    return {"dir": target, "template": template, "cfg": templates.load_stage(STAGE, project),
            "transformed": package.sam_transform(template)}


@pytest.fixture(scope="module")
def packaged_lint(packaged):
    """cfn-lint's run on the packaged sam.json and its transform, once for the module."""
    return package.cfn_lint(packaged["dir"] / "sam.json")


def test_packaged_template_with_both_domains_is_lint_clean(packaged_lint):
    result = packaged_lint
    assert result.returncode == 0, result.stdout + result.stderr


def test_rest_domain_is_regional_and_maps_the_stage_without_a_base_path(packaged):
    resources = packaged["transformed"]["Resources"]
    domain = resources[templates.REST_DOMAIN_ID]["Properties"]
    assert domain == {"DomainName": "api.example.com", "RegionalCertificateArn": REST_CERT,
                      "EndpointConfiguration": {"Types": ["REGIONAL"]},
                      "SecurityPolicy": "TLS_1_2",
                      "Tags": [{"Key": "app", "Value": "realtime"},
                               {"Key": "stage", "Value": STAGE}]}
    mapping = resources[templates.REST_MAPPING_ID]["Properties"]
    assert "BasePath" not in mapping  # the empty mapping: /apps/... and /pusher/... as is
    assert mapping["RestApiId"] == {"Ref": "RestAPI"}
    stage_ref = mapping["Stage"]["Ref"]  # SAM's stage resource: created before the mapping
    assert resources[stage_ref]["Type"] == "AWS::ApiGateway::Stage"
    assert resources[stage_ref]["Properties"]["StageName"] == STAGE
    record = resources["RestDomainRecord"]["Properties"]
    assert record["AliasTarget"] == {
        "DNSName": {"Fn::GetAtt": [templates.REST_DOMAIN_ID, "RegionalDomainName"]},
        "HostedZoneId": {"Fn::GetAtt": [templates.REST_DOMAIN_ID, "RegionalHostedZoneId"]},
        "EvaluateTargetHealth": False}
    assert (record["HostedZoneId"], record["Name"], record["Type"]) == (
        ZONE, "api.example.com", "A")


def test_websocket_domain_is_a_distribution_with_the_path_function(packaged):
    resources = packaged["transformed"]["Resources"]
    function = resources[templates.WEBSOCKET_PATH_FUNCTION_ID]["Properties"]
    assert function["AutoPublish"] is True
    assert function["FunctionConfig"]["Runtime"] == "cloudfront-js-2.0"
    assert function["FunctionCode"] == templates.websocket_path_function_code(STAGE)
    config = resources[templates.WEBSOCKET_DISTRIBUTION_ID]["Properties"]["DistributionConfig"]
    assert config["Aliases"] == ["ws.example.com"]
    assert config["ViewerCertificate"] == {"AcmCertificateArn": WS_CERT,
                                           "SslSupportMethod": "sni-only",
                                           "MinimumProtocolVersion": "TLSv1.2_2021"}
    (origin,) = config["Origins"]
    assert origin["DomainName"] == {
        "Fn::Sub": "${WebsocketAPI}.execute-api.${AWS::Region}.${AWS::URLSuffix}"}
    assert origin["CustomOriginConfig"]["OriginProtocolPolicy"] == "https-only"
    behavior = config["DefaultCacheBehavior"]
    assert behavior["TargetOriginId"] == origin["Id"]
    assert behavior["CachePolicyId"] == templates.CACHING_DISABLED_POLICY_ID
    # every viewer header (Sec-WebSocket-Key/-Version, Authorization) but Host
    assert behavior["OriginRequestPolicyId"] == templates.ALL_VIEWER_EXCEPT_HOST_POLICY_ID
    assert behavior["FunctionAssociations"] == [{
        "EventType": "viewer-request",
        "FunctionARN": {"Fn::GetAtt": [templates.WEBSOCKET_PATH_FUNCTION_ID, "FunctionARN"]}}]
    record = resources["WebsocketDomainRecord"]["Properties"]
    assert record["AliasTarget"]["HostedZoneId"] == templates.CLOUDFRONT_HOSTED_ZONE_ID
    # the WebSocket API itself keeps its stage, routes and authorizer as packaged before
    assert resources["WebsocketConnectRoute"]["Properties"]["AuthorizationType"] == "CUSTOM"


def test_outputs_give_pusher_js_options_server_host_and_dns_targets(packaged):
    outputs = packaged["template"]["Outputs"]
    options = json.loads(outputs["PusherJsOptions"]["Value"])
    assert options["wsHost"] == "ws.example.com" and options["forceTLS"] is True
    assert options["wsPort"] == options["wssPort"] == 443
    assert options["channelAuthorization"]["endpoint"] == \
        "https://api.example.com/pusher/auth"
    assert outputs["PusherServerHost"]["Value"] == "api.example.com"
    assert outputs["WebSocketDomainTarget"]["Value"] == {
        "Fn::GetAtt": [templates.WEBSOCKET_DISTRIBUTION_ID, "DomainName"]}
    assert outputs["HttpDomainTargetZone"]["Value"] == {
        "Fn::GetAtt": [templates.REST_DOMAIN_ID, "RegionalHostedZoneId"]}
    # the execute-api URLs stay: clients that know the stage keep working
    assert "WebSocketURL" in outputs and "HttpURL" in outputs


def test_make_package_prints_what_the_domains_give(packaged, packaged_lint, monkeypatch,
                                                   capsys):
    monkeypatch.setattr(package, "chalice_package", lambda *a, **k: packaged["dir"])
    monkeypatch.setattr(package, "cfn_lint", lambda template: packaged_lint)  # linted above
    monkeypatch.setattr(package, "reference_zip",  # no pip run: the size is not asserted here
                        lambda cache: packaged["dir"] / "deployment.zip")
    monkeypatch.setattr(templates, "load_stage", lambda stage, *a: packaged["cfg"])
    package.main(["--stage", STAGE])
    out = capsys.readouterr().out
    assert "pusher-js:  new Pusher('prod-key', {\"cluster\": \"eu\", \"wsHost\": " \
           "\"ws.example.com\"" in out
    assert "server libraries: host 'api.example.com', port 443" in out
    assert "ws.example.com CNAME the output WebSocketDomainTarget (alias record created in " \
           f"{ZONE})" in out


def test_the_domain_stack_of_make_deploy_is_lint_clean(packaged, tmp_path):
    path = tmp_path / "domains.json"
    path.write_text(json.dumps(templates.domain_template(packaged["cfg"])))
    result = package.cfn_lint(path)
    assert result.returncode == 0, result.stdout + result.stderr
    # the same resources as the packaged stack, but the REST stage given by name
    stack = json.loads(path.read_text())["Resources"]
    merged = templates.merge_template(packaged["cfg"])["Resources"]
    for name, resource in stack.items():
        expected = copy.deepcopy(merged[name])
        if name == templates.REST_MAPPING_ID:
            expected["Properties"]["Stage"] = STAGE
        assert resource == expected, name


def test_cfn_lint_on_the_domains_is_not_a_rubber_stamp(packaged, tmp_path):
    broken = templates.domain_template(packaged["cfg"])
    broken["Resources"][templates.WEBSOCKET_PATH_FUNCTION_ID]["Properties"]["FunctionConfig"][
        "Runtime"] = "cloudfront-js-9.0"
    path = tmp_path / "domains.json"
    path.write_text(json.dumps(broken))
    result = package.cfn_lint(path)
    assert result.returncode != 0 and "'cloudfront-js-9.0' is not one of" in result.stdout


# --- make deploy: the domain stack -----------------------------------------------------------

REGION = "us-east-1"
WS_API, REST_API = "wsapi1234", "restapi567"


class FakeApp:
    def __init__(self, websocket_api_id=WS_API, rest_api_id=REST_API):
        self.websocket_api_id, self.rest_api_id = websocket_api_id, rest_api_id


@pytest.fixture
def domain_deployer(tmp_path, monkeypatch):
    import boto3
    from botocore.stub import Stubber

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    cfg = stage_with(tmp_path, websocket_domain=WS_DOMAIN, rest_domain=REST_DOMAIN)
    cfn = boto3.client("cloudformation", region_name=REGION)
    stubber = Stubber(cfn)
    stubber.activate()
    lines = []
    deployer = deploy.Deployer(cfg, lambda service: cfn, project_dir=tmp_path,
                               run=None, echo=lines.append)
    return {"cfg": cfg, "deployer": deployer, "stubber": stubber, "lines": lines}


OUTPUTS = [{"OutputKey": "WebSocketDomainTarget", "OutputValue": "d111111abcdef8.cloudfront.net"},
           {"OutputKey": "HttpDomainTarget",
            "OutputValue": "d-abc123.execute-api.us-east-1.amazonaws.com"},
           {"OutputKey": "HttpDomainTargetZone", "OutputValue": "Z1UJRXOUMOOFQ8"}]


def stack(cfg, status, ws=WS_API, rest=REST_API, outputs=None):
    return {"Stacks": [{
        "StackName": cfg.domain_stack_name, "StackStatus": status,
        "CreationTime": "2026-01-01T00:00:00Z",
        "Parameters": [{"ParameterKey": "RestAPI", "ParameterValue": rest},
                       {"ParameterKey": "WebsocketAPI", "ParameterValue": ws}],
        "Tags": [{"Key": k, "Value": v} for k, v in sorted(cfg.tags.items())],
        **({"Outputs": outputs} if outputs else {})}]}


def expect_write(stubber, cfg, operation, ws=WS_API, waited="CREATE_COMPLETE"):
    name = cfg.domain_stack_name
    params = {"StackName": name, "TemplateBody": json.dumps(templates.domain_template(cfg)),
              "Tags": [{"Key": k, "Value": v} for k, v in sorted(cfg.tags.items())],
              "Parameters": [{"ParameterKey": "RestAPI", "ParameterValue": REST_API},
                             {"ParameterKey": "WebsocketAPI", "ParameterValue": ws}]}
    if operation == "create_stack":
        params.update(OnFailure="ROLLBACK", EnableTerminationProtection=True)
    stubber.add_response(operation, {"StackId": f"arn:aws:cloudformation:{REGION}:"
                                                f"123456789012:stack/{name}/1"}, params)
    stubber.add_response("describe_stacks", stack(cfg, waited, ws=ws),  # the waiter
                         {"StackName": name})
    stubber.add_response("describe_stacks", stack(cfg, waited, ws=ws, outputs=OUTPUTS),
                         {"StackName": name})


def expect_current(stubber, cfg, ws=WS_API):
    name = cfg.domain_stack_name
    stubber.add_response("describe_stacks", stack(cfg, "CREATE_COMPLETE", ws=ws),
                         {"StackName": name})
    stubber.add_response("get_template", {"TemplateBody": json.dumps(
        templates.domain_template(cfg))}, {"StackName": name, "TemplateStage": "Original"})


def test_first_deploy_creates_the_domain_stack_with_the_api_ids(domain_deployer):
    cfg, deployer, stubber = (domain_deployer[k] for k in ("cfg", "deployer", "stubber"))
    stubber.add_client_error("describe_stacks", "ValidationError",
                             f"Stack with id {cfg.domain_stack_name} does not exist")
    expect_write(stubber, cfg, "create_stack")
    outputs = deployer.ensure_domains(FakeApp(), waiter_delay=0)
    stubber.assert_no_pending_responses()
    assert outputs["WebSocketDomainTarget"] == "d111111abcdef8.cloudfront.net"
    assert f"stack {cfg.domain_stack_name} created" in deployer.changes


def test_a_second_deploy_writes_nothing(domain_deployer):
    cfg, deployer, stubber = (domain_deployer[k] for k in ("cfg", "deployer", "stubber"))
    expect_current(stubber, cfg)
    stubber.add_response("describe_stacks", stack(cfg, "CREATE_COMPLETE", outputs=OUTPUTS),
                         {"StackName": cfg.domain_stack_name})
    deployer.ensure_domains(FakeApp(), waiter_delay=0)  # a create/update call would raise
    stubber.assert_no_pending_responses()
    assert deployer.changes == []


def test_a_new_api_id_updates_the_stack_rather_than_making_another(domain_deployer):
    cfg, deployer, stubber = (domain_deployer[k] for k in ("cfg", "deployer", "stubber"))
    expect_current(stubber, cfg, ws="oldapi0001")
    expect_write(stubber, cfg, "update_stack", waited="UPDATE_COMPLETE")
    deployer.ensure_domains(FakeApp(), waiter_delay=0)
    stubber.assert_no_pending_responses()
    assert deployer.changes == [f"stack {cfg.domain_stack_name} updated"]


def test_a_domain_stack_left_from_removed_settings_is_named_not_deleted(domain_deployer):
    deployer, stubber = domain_deployer["deployer"], domain_deployer["stubber"]
    cfg = templates.load_stage(STAGE)
    deployer.cfg = cfg
    stubber.add_response("describe_stacks", stack(cfg, "CREATE_COMPLETE"),
                         {"StackName": cfg.domain_stack_name})
    assert deployer.ensure_domains(FakeApp(), waiter_delay=0) == {}
    stubber.assert_no_pending_responses()
    assert any("no longer in config.json" in line and
               f"delete-stack --stack-name {cfg.domain_stack_name}" in line
               for line in domain_deployer["lines"])


def test_a_rest_domain_without_a_rest_api_is_a_clear_error(domain_deployer):
    with pytest.raises(deploy.DeployError, match="no REST API"):
        domain_deployer["deployer"].ensure_domains(FakeApp(rest_api_id=None))


def test_deploy_stops_on_a_misplaced_certificate_before_creating_anything(tmp_path, monkeypatch):
    import boto3
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(name, value)
    cfg = stage_with(tmp_path, rest_domain=REST_DOMAIN)  # certificate in us-east-1
    calls = []
    with mock_aws():
        boto3.client("ssm", region_name="eu-west-1").put_parameter(
            Name=cfg.secret_parameter, Value="s", Type="SecureString")
        deployer = deploy.Deployer(
            cfg, lambda service: boto3.client(service, region_name="eu-west-1"),
            project_dir=tmp_path, run=lambda *a, **k: calls.append(a), echo=print)
        with pytest.raises(deploy.DeployError, match="rest_domain.certificate_arn is in "
                                                     "us-east-1"):
            deployer.run()
        assert boto3.client("cloudformation", region_name="eu-west-1").list_stacks()[
            "StackSummaries"] == []
    assert calls == []


# the whole `make deploy` of a stage with both domains: moto for everything but API Gateway V2
# (Stubber, as in test_deploy.py) and the domain stack (Stubber: moto's CloudFormation knows no
# CloudFront or API Gateway domain resources)
from tests.integration.test_deploy import (  # noqa: E402,F401
    API_ID, aws, expect_converged, expect_first_attach, setup)


@pytest.fixture
def project(tmp_path):
    """test_deploy's project, with both custom domains on the prod stage."""
    return project_with(tmp_path, websocket_domain=WS_DOMAIN, rest_domain=REST_DOMAIN)


class StackRouter:
    """A CloudFormation client that hands calls about one stack to ``stubbed`` and every
    other call to ``rest`` (moto)."""

    def __init__(self, rest, stubbed, stack_name):
        self._rest, self._stubbed, self._name = rest, stubbed, stack_name

    def _target(self, kwargs):
        return self._stubbed if kwargs.get("StackName") == self._name else self._rest

    def __getattr__(self, operation):
        def call(**kwargs):
            return getattr(self._target(kwargs), operation)(**kwargs)
        return call

    def get_waiter(self, name):
        router = self

        class Waiter:
            def wait(self, **kwargs):
                return router._target(kwargs).get_waiter(name).wait(**kwargs)
        return Waiter()


def test_make_deploy_converges_and_prints_the_domains(setup):  # noqa: F811
    import boto3
    from botocore.stub import Stubber

    cfg, deployer = setup["cfg"], setup["deployer"]
    assert cfg.websocket_domain and cfg.rest_domain
    expect_first_attach(setup["stubber"], cfg)
    domains = boto3.client("cloudformation", region_name=REGION)
    stubber = Stubber(domains)
    stubber.activate()
    deployer._clients["cloudformation"] = StackRouter(
        boto3.client("cloudformation", region_name=REGION), domains, cfg.domain_stack_name)
    rest_api = setup["chalice"].rest_api()

    stubber.add_client_error("describe_stacks", "ValidationError",
                             f"Stack with id {cfg.domain_stack_name} does not exist")
    stubber.add_response("create_stack", {"StackId": "arn:aws:cloudformation:us-east-1:"
                                                     "123456789012:stack/domains/1"}, {
        "StackName": cfg.domain_stack_name,
        "TemplateBody": json.dumps(templates.domain_template(cfg)),
        "Tags": [{"Key": k, "Value": v} for k, v in sorted(cfg.tags.items())],
        "Parameters": [{"ParameterKey": "RestAPI", "ParameterValue": rest_api},
                       {"ParameterKey": "WebsocketAPI", "ParameterValue": API_ID}],
        "OnFailure": "ROLLBACK", "EnableTerminationProtection": True})
    for outputs in (None, OUTPUTS):  # the waiter, then the outputs
        stubber.add_response("describe_stacks", stack(cfg, "CREATE_COMPLETE", ws=API_ID,
                                                      rest=rest_api, outputs=outputs),
                             {"StackName": cfg.domain_stack_name})
    deployer.run()
    stubber.assert_no_pending_responses()
    setup["stubber"].assert_no_pending_responses()
    lines = "\n".join(setup["lines"])
    assert "ws.example.com CNAME d111111abcdef8.cloudfront.net (alias record created in " \
           f"{ZONE})" in lines
    assert "api.example.com CNAME d-abc123.execute-api.us-east-1.amazonaws.com (or a Route " \
           "53 alias, zone Z1UJRXOUMOOFQ8)" in lines
    assert "\"wsHost\": \"ws.example.com\"" in lines

    # the next `make deploy --attach-only`: reads only, on both APIs and on the domain stack
    deployer.changes.clear()
    expect_converged(setup["stubber"], cfg)
    stubber.add_response("describe_stacks", stack(cfg, "CREATE_COMPLETE", ws=API_ID,
                                                  rest=rest_api),
                         {"StackName": cfg.domain_stack_name})
    stubber.add_response("get_template", {"TemplateBody": json.dumps(
        templates.domain_template(cfg))},
        {"StackName": cfg.domain_stack_name, "TemplateStage": "Original"})
    stubber.add_response("describe_stacks", stack(cfg, "CREATE_COMPLETE", ws=API_ID,
                                                  rest=rest_api, outputs=OUTPUTS),
                         {"StackName": cfg.domain_stack_name})
    deployer.run(attach_only=True)
    stubber.assert_no_pending_responses()
    assert deployer.changes == []
