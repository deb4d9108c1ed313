"""CloudFormation for what Chalice cannot create: the connection table, the push queue and its
dead-letter queue, the ``$connect`` REQUEST authorizer, and the settings Chalice has no word for.

Two products, both built from ``.chalice/config.json`` (names, per-function timeouts, the
``infra`` block of each stage) and from :data:`chalicelib.registry.table.TABLE_SCHEMA`, so
that a name or a key schema lives in exactly one place:

* :func:`infrastructure_template`: a standalone stack (table, queue, DLQ) for the
  ``make deploy`` path, where ``chalice deploy`` creates the functions and APIs itself;
* :func:`merge_template`: the file handed to ``chalice package --merge-template`` for the
  ``make package`` path. Chalice deep-merges it into its SAM template: dictionaries merge key by
  key, any other value (string, list) replaces Chalice's.

Why no identity source on the authorizer: API Gateway checks every listed identity source
before it calls a REQUEST authorizer and answers 401 *without calling it* when one is missing
or empty (API Gateway V2 API reference, ``Authorizer.identitySource``). Our clients send the
token either in the ``Authorization`` header (servers, mobile) or in the query string
(browsers cannot set headers on a WebSocket handshake), so listing
``route.request.header.Authorization`` would lock out every browser and listing
``route.request.querystring.token`` every header client. Identity sources are optional for
REQUEST authorizers and WebSocket authorizers have no result cache that would need them as a
key, so none are listed: every ``$connect`` reaches ``ws_authorizer``, which applies the one
extraction rule of :func:`chalicelib.auth.identity.extract_token` and raises ``Unauthorized`` (401)
itself when no source carries a token.

Custom domains (``infra.websocket_domain``, ``infra.rest_domain``): :func:`domain_resources`, in the
merge template or, for ``make deploy``, in a stack of their own (:func:`domain_template`).

Run ``python -m infra.templates {infrastructure,merge,domains} --stage prod`` to print one.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # ``python infra/templates.py`` as well as ``-m``
    sys.path.insert(0, str(ROOT))

from chalicelib.registry.table import TABLE_SCHEMA  # noqa: E402  (no boto3 at import)
from chalicelib.settings import default_metrics_namespace  # noqa: E402

#: every Lambda function of app.py by its Chalice name (``lambda_functions`` keys in
#: config.json); tests check this against the packaged template so a new handler is noticed.
FUNCTIONS = (
    "api_handler", "jwt_auth", "ws_authorizer",
    "websocket_connect", "websocket_message", "websocket_disconnect",
    "push_worker", "pusher_hello", "registry_stream",
)
#: the registry's stream -> ``registry_stream``: only REMOVE records made by TTL (DynamoDB
#: Developer Guide, "DynamoDB Streams and Time to Live"; Lambda event filtering)
REGISTRY_STREAM_FILTER = json.dumps({
    "eventName": ["REMOVE"],
    "userIdentity": {"type": ["Service"], "principalId": ["dynamodb.amazonaws.com"]}})
#: functions that push to connections outside a WebSocket handler, so need the API id
PUSHING_FUNCTIONS = ("api_handler", "push_worker")
#: logical id Chalice gives the SQS event of ``push_worker`` inside its SAM function
SQS_EVENT_NAME = "PushWorkerSqsEventSource"
#: the REST API's own answers (not the app's) that get the stage's CORS headers: a 401/403 from
#: ``jwt_auth`` or a throttle is API Gateway's answer, and without ``Access-Control-Allow-Origin``
#: a browser page cannot read it (AWS docs, "Setting up gateway responses to customize error
#: responses" and "Enabling CORS for a REST API resource")
CORS_GATEWAY_RESPONSES = ("UNAUTHORIZED", "ACCESS_DENIED", "DEFAULT_4XX", "DEFAULT_5XX")
AUTHORIZER_ID = "WsConnectAuthorizer"
#: what ``identitySource`` is set to, on purpose (see the module docstring)
IDENTITY_SOURCE: List[str] = []
#: receives before a push message moves to the dead-letter queue
MAX_RECEIVE_COUNT = 5
#: dead-letter retention: SQS's maximum, 14 days in seconds
DLQ_RETENTION_SECONDS = 14 * 24 * 60 * 60
#: AWS's advice for Lambda event sources: visibility timeout >= 6 x the function timeout
#: (Lambda Developer Guide, "Using Lambda with Amazon SQS")
VISIBILITY_TIMEOUT_FACTOR = 6
DEFAULT_LOG_RETENTION_DAYS = 30
#: what deleting a stack does to the data resources: the table (live connections) and the
#: queues (pushes not yet delivered) outlive it. ``RetainExceptOnCreate`` keeps them on every
#: delete, except when the stack operation that created them rolls back: a failed first
#: create leaves nothing behind that would block the next attempt (AWS CloudFormation User
#: Guide, "DeletionPolicy attribute"). ``UpdateReplacePolicy`` has no such variant: a
#: replacement keeps the old resource.
DELETION_POLICY = "RetainExceptOnCreate"
UPDATE_REPLACE_POLICY = "Retain"
#: resource types that make up the WebSocket API's snapshot: a deployment must be re-created
#: when any of them changes (``AWS::ApiGatewayV2::Deployment`` has no property whose update
#: re-snapshots the API)
WEBSOCKET_SNAPSHOT_TYPES = (
    "AWS::ApiGatewayV2::Api", "AWS::ApiGatewayV2::Route", "AWS::ApiGatewayV2::Integration",
    "AWS::ApiGatewayV2::Authorizer", "AWS::ApiGatewayV2::RouteResponse",
    "AWS::ApiGatewayV2::IntegrationResponse", "AWS::ApiGatewayV2::Model",
)


# --- stage configuration ------------------------------------------------------------------------

@dataclass(frozen=True)
class StageConfig:
    """What infra needs to know about one stage of ``.chalice/config.json``.

    Attributes:
        app_name: Chalice ``app_name`` (``realtime``).
        stage: the Chalice stage (``dev``, ``staging``, ``prod``).
        api_gateway_stage: the API Gateway stage name of both APIs.
        environment: the stage's merged ``environment_variables``.
        table_name, queue_name: ``CONNECTIONS_TABLE``, ``PUSH_QUEUE_NAME``.
        secret_parameter: ``PUSHER_SECRET_PARAMETER`` or None.
        log_retention_days: ``stages.<stage>.infra.log_retention_in_days`` (days).
        push_worker_timeout: the worker's Lambda timeout (seconds).
        policy_files: Chalice function name -> IAM policy file path for that function.
        authorizer_reserved_concurrency: Chalice's ``reserved_concurrency`` of
            ``ws_authorizer`` (concurrent executions), or None for no reservation.
        metrics_namespace: the namespace of the functions' EMF metrics
            (``POWERTOOLS_METRICS_NAMESPACE``, default ``Realtime/<stage>``).
        alarm_emails: ``stages.<stage>.infra.alarm_emails``: addresses subscribed to a new SNS
            topic that every alarm notifies (none: no topic is created).
        alarm_topic_arn: ``stages.<stage>.infra.alarm_topic_arn``: an existing SNS topic every
            alarm notifies, or None.
        websocket_domain, rest_domain: ``stages.<stage>.infra.websocket_domain`` /
            ``rest_domain`` (:class:`DomainSetting`), or None: see :func:`domain_resources`.
    """

    app_name: str
    stage: str
    api_gateway_stage: str
    environment: Dict[str, str]
    table_name: str
    queue_name: str
    secret_parameter: Optional[str]
    log_retention_days: int
    push_worker_timeout: int
    policy_files: Dict[str, Path]
    authorizer_reserved_concurrency: Optional[int] = None
    metrics_namespace: str = ""
    alarm_emails: Tuple[str, ...] = ()
    alarm_topic_arn: Optional[str] = None
    websocket_domain: Optional["DomainSetting"] = None
    rest_domain: Optional["DomainSetting"] = None

    @property
    def websocket_api_name(self) -> str:
        """The name ``chalice deploy`` gives the WebSocket API (``chalice.deploy.appgraph``:
        ``<app>-<stage>-websocket-api``); the functions find the API by it."""
        return f"{self.app_name}-{self.stage}-websocket-api"

    @property
    def dlq_name(self) -> str:
        return f"{self.queue_name}-dlq"

    @property
    def authorizer_name(self) -> str:
        return f"{self.app_name}-{self.stage}-ws-authorizer"

    @property
    def infrastructure_stack_name(self) -> str:
        return f"{self.app_name}-{self.stage}-infrastructure"

    @property
    def domain_stack_name(self) -> str:
        """The ``make deploy`` path's stack of the custom domains (:func:`domain_template`)."""
        return f"{self.app_name}-{self.stage}-domains"

    def function_name(self, name: str) -> str:
        """The deployed Lambda name: Chalice's own scheme, ``<app>-<stage>[-<function>]``."""
        if name == "api_handler":
            return f"{self.app_name}-{self.stage}"
        return f"{self.app_name}-{self.stage}-{name}"

    @property
    def tags(self) -> Dict[str, str]:
        return {"app": self.app_name, "stage": self.stage}


def load_stage(stage: str, project_dir: Path = ROOT) -> StageConfig:
    """Read ``stage`` from ``<project_dir>/.chalice/config.json``.

    Raises:
        SystemExit: unknown stage or a missing name (the message names what is missing).
    """
    config = json.loads((project_dir / ".chalice" / "config.json").read_text())
    stages = config.get("stages", {})
    if stage not in stages:
        raise SystemExit(f"unknown stage {stage!r}: .chalice/config.json has {sorted(stages)}")
    stage_cfg = stages[stage]
    env = {**config.get("environment_variables", {}), **stage_cfg.get("environment_variables", {})}
    for name in ("CONNECTIONS_TABLE", "PUSH_QUEUE_NAME"):
        if not env.get(name):
            raise SystemExit(f"stage {stage}: environment_variables.{name} is required")

    def lookup(function: str, key: str) -> Any:
        # Chalice's own order: stage.lambda_functions, stage, lambda_functions, top level
        for source in (stage_cfg.get("lambda_functions", {}).get(function, {}), stage_cfg,
                       config.get("lambda_functions", {}).get(function, {}), config):
            if source.get(key) is not None:
                return source[key]
        return None

    reserved = lookup("ws_authorizer", "reserved_concurrency")
    if reserved is not None and (isinstance(reserved, bool) or not isinstance(reserved, int)
                                 or reserved < 1):
        raise SystemExit(f"stage {stage}: lambda_functions.ws_authorizer.reserved_concurrency "
                         "must be a whole number >= 1 (0 would refuse every $connect); "
                         "leave it out for no reservation")
    infra_cfg = stage_cfg.get("infra", {})
    emails = infra_cfg.get("alarm_emails", [])
    if not isinstance(emails, list) or not all(
            isinstance(e, str) and re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", e) for e in emails):
        raise SystemExit(f"stage {stage}: infra.alarm_emails must be a list of e-mail addresses")
    topic_arn = infra_cfg.get("alarm_topic_arn")
    if topic_arn is not None and not (isinstance(topic_arn, str)
                                      and re.fullmatch(r"arn:aws[a-z-]*:sns:[^:]+:\d{12}:[\w-]+",
                                                       topic_arn)):
        raise SystemExit(f"stage {stage}: infra.alarm_topic_arn must be an SNS topic ARN")
    websocket_domain = parse_domain_setting(stage, "websocket_domain",
                                            infra_cfg.get("websocket_domain"))
    rest_domain = parse_domain_setting(stage, "rest_domain", infra_cfg.get("rest_domain"))
    if websocket_domain and rest_domain and websocket_domain.name == rest_domain.name:
        raise SystemExit(f"stage {stage}: infra.websocket_domain and infra.rest_domain name the "
                         f"same domain {rest_domain.name!r}: API Gateway serves a WebSocket API "
                         "and a REST API on different names")
    if websocket_domain and not _PATH_KEY_RE.fullmatch(env.get("PUSHER_KEY") or ""):
        raise SystemExit(f"stage {stage}: infra.websocket_domain needs PUSHER_KEY made of "
                         "letters, digits and . _ ~ - only: the key travels in the URL path "
                         "/app/<key> that the domain's path function rewrites")
    policy_files = {}
    for function in FUNCTIONS:
        filename = lookup(function, "iam_policy_file") or f"policy-{stage}.json"
        policy_files[function] = project_dir / ".chalice" / filename
    return StageConfig(
        app_name=config["app_name"],
        stage=stage,
        api_gateway_stage=stage_cfg.get("api_gateway_stage") or config.get(
            "api_gateway_stage", "api"),
        environment=env,
        table_name=env["CONNECTIONS_TABLE"],
        queue_name=env["PUSH_QUEUE_NAME"],
        secret_parameter=env.get("PUSHER_SECRET_PARAMETER"),
        log_retention_days=int(stage_cfg.get("infra", {}).get(
            "log_retention_in_days", DEFAULT_LOG_RETENTION_DAYS)),
        push_worker_timeout=int(lookup("push_worker", "lambda_timeout") or 60),
        policy_files=policy_files,
        authorizer_reserved_concurrency=reserved,
        metrics_namespace=env.get("POWERTOOLS_METRICS_NAMESPACE")
        or default_metrics_namespace(env.get("STAGE") or stage),
        alarm_emails=tuple(emails),
        alarm_topic_arn=topic_arn,
        websocket_domain=websocket_domain,
        rest_domain=rest_domain,
    )


# --- shared resources ---------------------------------------------------------------------------

def _tag_list(cfg: StageConfig) -> List[Dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(cfg.tags.items())]


def table_resource(cfg: StageConfig) -> Dict[str, Any]:
    """``AWS::DynamoDB::Table``: :data:`TABLE_SCHEMA` as is (its keys are CloudFormation's),
    plus the name and tags. On-demand billing and the TTL come from the schema."""
    properties = {"TableName": cfg.table_name, **copy.deepcopy(TABLE_SCHEMA),
                  "Tags": _tag_list(cfg)}
    properties["StreamSpecification"] = {  # CloudFormation: no StreamEnabled member
        "StreamViewType": TABLE_SCHEMA["StreamSpecification"]["StreamViewType"]}
    return _retained({"Type": "AWS::DynamoDB::Table", "Properties": properties})


def _retained(resource: Dict[str, Any]) -> Dict[str, Any]:
    """``resource`` with :data:`DELETION_POLICY` and :data:`UPDATE_REPLACE_POLICY`."""
    return {**resource, "DeletionPolicy": DELETION_POLICY,
            "UpdateReplacePolicy": UPDATE_REPLACE_POLICY}


def queue_resources(cfg: StageConfig) -> Dict[str, Dict[str, Any]]:
    """The push queue and its dead-letter queue (SQS-managed encryption on both), both kept
    when the stack is deleted (:data:`DELETION_POLICY`)."""
    return {
        "PushDeadLetterQueue": _retained({
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": cfg.dlq_name,
                "MessageRetentionPeriod": DLQ_RETENTION_SECONDS,
                "SqsManagedSseEnabled": True,
                "Tags": _tag_list(cfg),
            },
        }),
        "PushQueue": _retained({
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": cfg.queue_name,
                "VisibilityTimeout": VISIBILITY_TIMEOUT_FACTOR * cfg.push_worker_timeout,
                "SqsManagedSseEnabled": True,
                "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": ["PushDeadLetterQueue", "Arn"]},
                    "maxReceiveCount": MAX_RECEIVE_COUNT,
                },
                "Tags": _tag_list(cfg),
            },
        }),
    }


def _data_outputs() -> Dict[str, Any]:
    return {
        "ConnectionsTableName": {"Value": {"Ref": "ConnectionsTable"}},
        "PushQueueUrl": {"Value": {"Ref": "PushQueue"}},
        "PushQueueArn": {"Value": {"Fn::GetAtt": ["PushQueue", "Arn"]}},
        "PushDeadLetterQueueUrl": {"Value": {"Ref": "PushDeadLetterQueue"}},
    }


def infrastructure_template(cfg: StageConfig) -> Dict[str, Any]:
    """The standalone stack of the ``make deploy`` path: table, queue, dead-letter queue,
    and the dashboard and alarms (:func:`monitoring_resources`)."""
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"{cfg.app_name} {cfg.stage}: connection table, push queue, dashboard "
                       "and alarms",
        "Resources": {"ConnectionsTable": table_resource(cfg), **queue_resources(cfg),
                      **monitoring_resources(cfg)},
        "Outputs": {**_data_outputs(), **_monitoring_outputs(cfg)},
    }


# --- dashboard and alarms -----------------------------------------------------------------------

#: alarm period, seconds (CloudWatch's standard resolution is 60 s; SQS publishes every 5 min)
ALARM_PERIOD_SECONDS = 300
#: ``AuthorizerRefused`` reasons that are the service's fault, not the caller's: the
#: authorizer's errors. (Lambda's ``Errors`` metric cannot tell: an authorizer *refuses* by
#: raising ``Unauthorized``, which Lambda counts as an error.)
AUTHORIZER_FAULT_REASONS = ("unexpected", "not_configured", "jwks_unavailable")
DASHBOARD_ID = "Dashboard"
ALARM_TOPIC_ID = "AlarmTopic"


def _emf_metric(cfg: StageConfig, name: str, **dimensions: str) -> Dict[str, Any]:
    return {"Namespace": cfg.metrics_namespace, "MetricName": name,
            "Dimensions": [{"Name": k, "Value": v} for k, v in
                           sorted({"service": "realtime", **dimensions}.items())]}


def _alarm_actions(cfg: StageConfig) -> List[Any]:
    actions: List[Any] = []
    if cfg.alarm_emails:
        actions.append({"Ref": ALARM_TOPIC_ID})
    if cfg.alarm_topic_arn:
        actions.append(cfg.alarm_topic_arn)
    return actions


def _alarm(cfg: StageConfig, name: str, description: str,
           metrics: List[Dict[str, Any]], expression: Optional[str] = None) -> Dict[str, Any]:
    """An alarm that fires when the metric (or the expression over ``metrics``, missing
    data as 0) sums to at least 1 in one :data:`ALARM_PERIOD_SECONDS` period."""
    queries = [{"Id": f"m{i}", "ReturnData": expression is None,
                "MetricStat": {"Metric": metric, "Period": ALARM_PERIOD_SECONDS,
                               "Stat": "Maximum" if metric.get("MetricName") ==
                               "ApproximateNumberOfMessagesVisible" else "Sum"}}
               for i, metric in enumerate(metrics)]
    if expression is not None:
        queries.append({"Id": "total", "Expression": expression, "Label": name,
                        "ReturnData": True})
    actions = _alarm_actions(cfg)
    properties: Dict[str, Any] = {
        "AlarmName": f"{cfg.app_name}-{cfg.stage}-{name}",
        "AlarmDescription": description,
        "Metrics": queries,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "Threshold": 1,
        "EvaluationPeriods": 1,
        "DatapointsToAlarm": 1,
        "TreatMissingData": "notBreaching",
    }
    if actions:
        properties["AlarmActions"] = actions
        properties["OKActions"] = actions
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": properties}


def alarm_resources(cfg: StageConfig) -> Dict[str, Dict[str, Any]]:
    """The five alarms: dead-letter queue not empty, authorizer errors, 5xx on the REST API,
    throttled posts, worker errors; each notifies the alarm topic(s) when configured."""
    faults = [_emf_metric(cfg, "AuthorizerRefused", reason=r) for r in AUTHORIZER_FAULT_REASONS]
    return {
        "DeadLetterQueueAlarm": _alarm(
            cfg, "dlq-not-empty", "Push messages reached the dead-letter queue "
            f"{cfg.dlq_name}: they failed {MAX_RECEIVE_COUNT} times; inspect and redrive.",
            [{"Namespace": "AWS/SQS", "MetricName": "ApproximateNumberOfMessagesVisible",
              "Dimensions": [{"Name": "QueueName", "Value": cfg.dlq_name}]}]),
        "AuthorizerErrorsAlarm": _alarm(
            cfg, "authorizer-errors", "An authorizer failed for a reason of its own "
            f"({', '.join(AUTHORIZER_FAULT_REASONS)}): callers are refused; see its log.",
            faults, " + ".join(f"FILL(m{i}, 0)" for i in range(len(faults)))),
        "RestApi5xxAlarm": _alarm(
            cfg, "rest-5xx", "The REST API answered 5xx (503: settings or registry "
            "unavailable, 500: a bug).",
            [{"Namespace": "AWS/ApiGateway", "MetricName": "5XXError",
              "Dimensions": [{"Name": "ApiName", "Value": cfg.app_name},
                             {"Name": "Stage", "Value": cfg.api_gateway_stage}]}]),
        "ThrottledPostsAlarm": _alarm(
            cfg, "throttled-posts", "PostToConnection calls were still throttled after "
            "every retry (API Gateway's account throttle is shared by every API).",
            [_emf_metric(cfg, "MessagesThrottled")]),
        "WorkerErrorsAlarm": _alarm(
            cfg, "worker-errors", "The push worker failed, or reported records for retry.",
            [{"Namespace": "AWS/Lambda", "MetricName": "Errors",
              "Dimensions": [{"Name": "FunctionName",
                              "Value": cfg.function_name("push_worker")}]},
             _emf_metric(cfg, "ShardsRetried")], "FILL(m0, 0) + FILL(m1, 0)"),
    }


def dashboard_body(cfg: StageConfig) -> Dict[str, Any]:
    """The CloudWatch dashboard (``DashboardBody`` as a dict; ``${AWS::Region}`` is left for
    ``Fn::Sub``): the service's EMF figures, the queues, the functions' errors, the alarms."""
    ns, svc = cfg.metrics_namespace, "realtime"

    def emf(name: str, stat: str = "Sum", label: Optional[str] = None) -> List[Any]:
        return [ns, name, "service", svc, {"stat": stat, "label": label or name}]

    def search(name: str, dimension: str) -> List[Any]:
        return [{"expression": f"SEARCH('{{{ns},{dimension},service}} MetricName=\"{name}\"', "
                               f"'Sum', 60)", "label": "", "id": f"s_{name.lower()}"}]

    def widget(title: str, metrics: List[Any], x: int, y: int, stat: str = "Sum",
               view: str = "timeSeries") -> Dict[str, Any]:
        return {"type": "metric", "x": x, "y": y, "width": 8, "height": 6,
                "properties": {"title": title, "view": view, "region": "${AWS::Region}",
                               "stat": stat, "period": 60, "metrics": metrics}}

    functions = [cfg.function_name(f) for f in FUNCTIONS]
    alarm_arns = [f"arn:aws:cloudwatch:${{AWS::Region}}:${{AWS::AccountId}}:alarm:"
                  f"{cfg.app_name}-{cfg.stage}-{n}" for n in
                  ("dlq-not-empty", "authorizer-errors", "rest-5xx", "throttled-posts",
                   "worker-errors")]
    return {"widgets": [
        {"type": "alarm", "x": 0, "y": 0, "width": 24, "height": 3,
         "properties": {"title": "Alarms", "alarms": alarm_arns}},
        widget("Connections", [search("ConnectionsOpened", "dialect"),
                               search("ConnectionsClosed", "dialect")], 0, 3),
        widget("Authorizer", [emf("AuthorizerAllowed"),
                              search("AuthorizerRefused", "reason")], 8, 3),
        widget("Messages", [emf("MessagesDelivered"), emf("MessagesGone"),
                            emf("MessagesFailed"), emf("MessagesThrottled")], 16, 3),
        widget("Fan-out duration (ms)", [emf("FanoutDuration", "p50", "p50"),
                                         emf("FanoutDuration", "p99", "p99")], 0, 9),
        widget("Fan-out audience", [emf("FanoutAudience", "Average", "average"),
                                    emf("FanoutAudience", "Maximum", "maximum")], 8, 9),
        widget("Client events, webhooks, refused subscriptions",
               [emf("ClientEvents"), emf("WebhooksReceived"), emf("WebhooksFailed"),
                search("SubscriptionsRefused", "reason")], 16, 9),
        widget("Push queue", [emf("ShardsProcessed"), emf("ShardsRetried"),
                              ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName",
                               cfg.queue_name, {"stat": "Maximum", "label": "queue depth"}],
                              ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName",
                               cfg.dlq_name, {"stat": "Maximum", "label": "dead letters"}]],
               0, 15),
        widget("Function errors", [["AWS/Lambda", "Errors", "FunctionName", name,
                                    {"label": name}] for name in functions], 8, 15),
        widget("REST API", [["AWS/ApiGateway", "4XXError", "ApiName", cfg.app_name, "Stage",
                             cfg.api_gateway_stage],
                            ["AWS/ApiGateway", "5XXError", "ApiName", cfg.app_name, "Stage",
                             cfg.api_gateway_stage]], 16, 15),
        widget("Webhooks out (PUSHER_WEBHOOKS)",
               [emf("WebhooksDelivered"), emf("WebhooksRetried"), emf("WebhooksDropped"),
                emf("WebhooksNotQueued")], 0, 21),
        widget("Resumes after a reconnect", [emf("EventsReplayed"),
                                              search("ResumesFailed", "reason")], 8, 21),
    ]}


def monitoring_resources(cfg: StageConfig) -> Dict[str, Dict[str, Any]]:
    """The dashboard ``<app>-<stage>``, the alarms (:func:`alarm_resources`) and, when
    ``infra.alarm_emails`` lists addresses, the SNS topic they notify (each address gets
    AWS's confirmation mail first)."""
    resources: Dict[str, Dict[str, Any]] = {
        DASHBOARD_ID: {"Type": "AWS::CloudWatch::Dashboard", "Properties": {
            "DashboardName": f"{cfg.app_name}-{cfg.stage}",
            "DashboardBody": {"Fn::Sub": json.dumps(dashboard_body(cfg),
                                                    separators=(",", ":"))}}},
        **alarm_resources(cfg),
    }
    if cfg.alarm_emails:
        resources[ALARM_TOPIC_ID] = {"Type": "AWS::SNS::Topic", "Properties": {
            "TopicName": f"{cfg.app_name}-{cfg.stage}-alarms",
            "Subscription": [{"Protocol": "email", "Endpoint": e} for e in cfg.alarm_emails],
            "Tags": _tag_list(cfg)}}
    return resources


def _monitoring_outputs(cfg: StageConfig) -> Dict[str, Any]:
    return {"DashboardURL": {
        "Description": "CloudWatch dashboard of the stage",
        "Value": {"Fn::Sub": "https://${AWS::Region}.console.aws.amazon.com/cloudwatch/home"
                             f"?region=${{AWS::Region}}#dashboards:name={cfg.app_name}-"
                             f"{cfg.stage}"}}}


# --- custom domains -----------------------------------------------------------------------------
#
# Why a CloudFront distribution in front of the WebSocket API, and not an API Gateway custom
# domain with the API mapping ``app/<key>``: pusher-js always connects to
# ``wss://<wsHost>/app/<key>?protocol=7&…`` and cannot leave out the ``/app/<key>`` path, but
#
# * multi-level API mappings (``app/<key>``) exist for REST and HTTP APIs only: the WebSocket
#   mapping rules allow the characters ``$-_.+!*'()`` (no ``/``), and the console says a domain
#   with multi-level paths "can't be mapped to a WebSocket API" (API Gateway Developer Guide,
#   "Map API stages to a custom domain name for WebSocket APIs"; AWS What's New 2021-03-30,
#   "multi-level base path mappings" for "HTTP and REST APIs");
# * a WebSocket API accepts no path after its stage (or its mapping): ``…/prod/anything`` is
#   refused with 403 at the handshake, and the ``$connect`` event carries no path at all.
#
# So the WebSocket domain is a CloudFront distribution (it carries WebSockets: CloudFront
# Developer Guide, "Use WebSockets with CloudFront distributions") whose viewer-request
# CloudFront Function rewrites ``/app/<key>`` to the stage and hands the key on as the query
# parameter ``app_key`` — exactly what ``devtools/local_gateway.py`` does — so a wrong key gets
# Pusher's own ``pusher:error`` 4001 from :func:`chalicelib.protocol.pusher.handshake_error`
# (pusher-js then stops reconnecting), not an opaque 403. ``/`` goes to the stage as well, so
# native clients use ``wss://<name>/?token=…``; any other path gets 403 from the function.
# The REST API needs no such trick: an API Gateway REGIONAL custom domain with an empty base
# path mapping serves ``/apps/…`` and ``/pusher/…`` without the stage prefix.

#: CloudFront takes certificates from this region only (CloudFront Developer Guide,
#: "Requirements for using SSL/TLS certificates with CloudFront")
CLOUDFRONT_CERTIFICATE_REGION = "us-east-1"
#: the hosted zone of every CloudFront distribution, for Route 53 alias records (Route 53 API
#: reference, ``AliasTarget.HostedZoneId``)
CLOUDFRONT_HOSTED_ZONE_ID = "Z2FDTNDATAQYW2"
#: managed CloudFront policies (CloudFront Developer Guide, "Use managed cache policies" and
#: "Use managed origin request policies"): no caching; every viewer header (the WebSocket
#: handshake's ``Sec-WebSocket-*``, ``Authorization``) and query string, but not ``Host``, which
#: must name the ``execute-api`` origin for API Gateway to find the API
CACHING_DISABLED_POLICY_ID = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
ALL_VIEWER_EXCEPT_HOST_POLICY_ID = "b689b0a8-53d0-40ab-baf2-68738e2966ac"
#: the query parameter that carries the app key from the path (see
#: :data:`chalicelib.protocol.pusher.APP_KEY_PARAMETER`)
APP_KEY_PARAMETER = "app_key"
WEBSOCKET_DISTRIBUTION_ID = "WebsocketDistribution"
WEBSOCKET_PATH_FUNCTION_ID = "WebsocketPathFunction"
REST_DOMAIN_ID = "RestApiDomainName"
REST_MAPPING_ID = "RestApiBasePathMapping"

_DOMAIN_KEYS = ("name", "certificate_arn", "hosted_zone_id")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_RE = re.compile(rf"(?:{_LABEL}\.)+[a-z](?:[a-z0-9-]{{0,61}}[a-z0-9])?", re.ASCII)
_ACM_ARN_RE = re.compile(
    r"arn:(?P<partition>aws|aws-cn|aws-us-gov):acm:(?P<region>[a-z]{2}(?:-[a-z]+)+-\d):"
    r"\d{12}:certificate/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    re.ASCII)
_HOSTED_ZONE_RE = re.compile(r"Z[A-Z0-9]{1,31}", re.ASCII)
#: what a key in the path may hold to be passed on unencoded (RFC 3986 unreserved characters)
_PATH_KEY_RE = re.compile(r"[A-Za-z0-9._~-]{1,200}", re.ASCII)


@dataclass(frozen=True)
class DomainSetting:
    """One custom domain of a stage (``stages.<stage>.infra.websocket_domain`` or
    ``rest_domain`` in ``.chalice/config.json``).

    Attributes:
        name: the host name clients use (``ws.example.com``), lower case, no trailing dot.
        certificate_arn: the ACM certificate covering ``name``:
            ``arn:<partition>:acm:<region>:<account>:certificate/<uuid>``.
        hosted_zone_id: a Route 53 public hosted zone to create the alias record in, or None
            (then point ``name`` at the DNS target yourself).
    """

    name: str
    certificate_arn: str
    hosted_zone_id: Optional[str] = None

    @property
    def certificate_region(self) -> str:
        return _ACM_ARN_RE.fullmatch(self.certificate_arn)["region"]


def parse_domain_setting(stage: str, key: str, value: Any) -> Optional[DomainSetting]:
    """Validate ``stages.<stage>.infra.<key>``: None (not set) or
    ``{"name": host, "certificate_arn": ACM ARN, "hosted_zone_id"?: Route 53 zone id}``.

    Returns:
        the :class:`DomainSetting`, or None when ``value`` is None.
    Raises:
        SystemExit: a message naming the setting and what is wrong with it.
    """
    if value is None:
        return None
    where = f"stage {stage}: infra.{key}"
    if not isinstance(value, dict):
        raise SystemExit(f"{where} must be an object "
                         '{"name": ..., "certificate_arn": ..., "hosted_zone_id"?: ...}')
    unknown = sorted(set(value) - set(_DOMAIN_KEYS))
    if unknown:
        raise SystemExit(f"{where}: unknown key(s) {', '.join(unknown)}; "
                         f"known: {', '.join(_DOMAIN_KEYS)}")
    name = value.get("name")
    if not (isinstance(name, str) and len(name) <= 253 and _DOMAIN_RE.fullmatch(name)):
        raise SystemExit(f"{where}.name must be a host name such as ws.example.com (lower-case "
                         "letters, digits and hyphens, dot-separated labels of at most 63, no "
                         f"wildcard, no trailing dot), not {name!r}")
    arn = value.get("certificate_arn")
    if not (isinstance(arn, str) and _ACM_ARN_RE.fullmatch(arn)):
        raise SystemExit(f"{where}.certificate_arn must be an ACM certificate ARN "
                         "(arn:aws:acm:<region>:<account>:certificate/<id>), not "
                         f"{arn!r}")
    zone = value.get("hosted_zone_id")
    if zone is not None and not (isinstance(zone, str) and _HOSTED_ZONE_RE.fullmatch(zone)):
        raise SystemExit(f"{where}.hosted_zone_id must be a Route 53 hosted zone id "
                         f"(Z followed by letters and digits), not {zone!r}")
    return DomainSetting(name=name, certificate_arn=arn, hosted_zone_id=zone)


def check_domain_regions(cfg: StageConfig, region: str) -> None:
    """The certificates are where AWS looks for them: the REST domain's (REGIONAL) in the
    stack's ``region`` (API Gateway Developer Guide, "Set up a Regional custom domain name":
    the certificate must be in the same Region as the API), the WebSocket domain's
    (CloudFront) in :data:`CLOUDFRONT_CERTIFICATE_REGION`.

    Raises:
        SystemExit: naming the setting, the certificate's region and the one needed.
    """
    checks = ((cfg.rest_domain, "rest_domain", region, "a REGIONAL API Gateway custom domain "
               "takes its certificate from the stack's region"),
              (cfg.websocket_domain, "websocket_domain", CLOUDFRONT_CERTIFICATE_REGION,
               "its CloudFront distribution takes certificates from us-east-1 only"))
    for domain, key, wanted, why in checks:
        if domain and domain.certificate_region != wanted:
            raise SystemExit(
                f"stage {cfg.stage}: infra.{key}.certificate_arn is in "
                f"{domain.certificate_region}, but {why} ({wanted}): request or import the "
                f"certificate for {domain.name} in {wanted}")


def websocket_path_function_code(stage: str) -> str:
    """The CloudFront Function (runtime ``cloudfront-js-2.0``, viewer request) of the WebSocket
    domain: ``/app/<key>`` -> ``/<stage>?…&app_key=<key>`` (a client's own ``app_key`` is kept,
    as the local gateway keeps it), ``/`` -> ``/<stage>``, any other path -> 403. The query
    string pusher-js sends (``protocol=7&client=js&…``) and a native client's ``token`` pass
    unchanged. A key outside RFC 3986's unreserved characters gets 403 (``load_stage`` refuses
    such a ``PUSHER_KEY`` when the domain is set)."""
    return "\n".join([
        "function handler(event) {",
        "  var request = event.request;",
        "  var match = /^\\/app\\/([A-Za-z0-9._~-]{1,200})\\/?$/.exec(request.uri);",
        "  if (match) {",
        f"    if (!request.querystring['{APP_KEY_PARAMETER}']) {{",
        f"      request.querystring['{APP_KEY_PARAMETER}'] = {{ value: match[1] }};",
        "    }",
        "  } else if (request.uri !== '/') {",
        "    return { statusCode: 403, statusDescription: 'Forbidden' };",
        "  }",
        f"  request.uri = '/{stage}';",
        "  return request;",
        "}",
        "",
    ])


def _alias_record(logical: str, domain: DomainSetting, target: Any,
                  zone: Any) -> Dict[str, Any]:
    return {logical: {"Type": "AWS::Route53::RecordSet", "Properties": {
        "HostedZoneId": domain.hosted_zone_id, "Name": domain.name, "Type": "A",
        "AliasTarget": {"DNSName": target, "HostedZoneId": zone,
                        "EvaluateTargetHealth": False}}}}


def domain_resources(cfg: StageConfig, rest_stage: Any) -> Dict[str, Dict[str, Any]]:
    """The resources of the stage's custom domains (none when neither is set).

    * ``websocket_domain``: an ``AWS::CloudFront::Function`` (:func:`websocket_path_function_code`)
      and an ``AWS::CloudFront::Distribution`` with the domain as alias, the certificate (SNI,
      TLS 1.2 at least), one origin ``<WebsocketAPI>.execute-api.<region>`` (HTTPS, TLS 1.2),
      no caching, every viewer header and query string but ``Host`` forwarded (see the comment
      above :data:`CLOUDFRONT_CERTIFICATE_REGION`);
    * ``rest_domain``: ``AWS::ApiGateway::DomainName`` (REGIONAL, ``TLS_1_2``) and an
      ``AWS::ApiGateway::BasePathMapping`` with no base path onto the REST API's stage, so
      ``https://<name>/apps/…`` and ``/pusher/…`` reach the routes with no stage prefix;
    * each with an alias ``A`` record in ``hosted_zone_id`` when one is given.

    Args:
        cfg: the stage.
        rest_stage: the REST stage for the base path mapping: ``{"Ref": "RestAPI.Stage"}`` in
            the SAM merge template (it orders the mapping after SAM's stage), the stage name in
            the ``make deploy`` domain stack.
    Returns:
        logical id -> resource; they refer to ``WebsocketAPI`` and ``RestAPI`` (resources of
        Chalice's template, or parameters of :func:`domain_template`).
    """
    resources: Dict[str, Dict[str, Any]] = {}
    ws = cfg.websocket_domain
    if ws:
        resources[WEBSOCKET_PATH_FUNCTION_ID] = {"Type": "AWS::CloudFront::Function",
                                                 "Properties": {
            "Name": f"{cfg.app_name}-{cfg.stage}-pusher-path",
            "AutoPublish": True,
            "FunctionCode": websocket_path_function_code(cfg.api_gateway_stage),
            "FunctionConfig": {"Comment": "/app/<key> -> the WebSocket stage, key as app_key",
                               "Runtime": "cloudfront-js-2.0"}}}
        resources[WEBSOCKET_DISTRIBUTION_ID] = {"Type": "AWS::CloudFront::Distribution",
                                                "Properties": {"DistributionConfig": {
            "Enabled": True,
            "Comment": f"{cfg.app_name} {cfg.stage}: WebSocket API at {ws.name}",
            "Aliases": [ws.name],
            "Origins": [{
                "Id": "websocket-api",
                "DomainName": {"Fn::Sub": "${WebsocketAPI}.execute-api.${AWS::Region}."
                                          "${AWS::URLSuffix}"},
                "CustomOriginConfig": {"OriginProtocolPolicy": "https-only",
                                       "OriginSSLProtocols": ["TLSv1.2"]}}],
            "DefaultCacheBehavior": {
                "TargetOriginId": "websocket-api",
                "ViewerProtocolPolicy": "https-only",
                "CachePolicyId": CACHING_DISABLED_POLICY_ID,
                "OriginRequestPolicyId": ALL_VIEWER_EXCEPT_HOST_POLICY_ID,
                "FunctionAssociations": [{
                    "EventType": "viewer-request",
                    "FunctionARN": {"Fn::GetAtt": [WEBSOCKET_PATH_FUNCTION_ID,
                                                   "FunctionARN"]}}]},
            "ViewerCertificate": {"AcmCertificateArn": ws.certificate_arn,
                                  "SslSupportMethod": "sni-only",
                                  "MinimumProtocolVersion": "TLSv1.2_2021"},
            }, "Tags": _tag_list(cfg)}}
        if ws.hosted_zone_id:
            resources.update(_alias_record(
                "WebsocketDomainRecord", ws,
                {"Fn::GetAtt": [WEBSOCKET_DISTRIBUTION_ID, "DomainName"]},
                CLOUDFRONT_HOSTED_ZONE_ID))
    rest = cfg.rest_domain
    if rest:
        resources[REST_DOMAIN_ID] = {"Type": "AWS::ApiGateway::DomainName", "Properties": {
            "DomainName": rest.name,
            "RegionalCertificateArn": rest.certificate_arn,
            "EndpointConfiguration": {"Types": ["REGIONAL"]},
            "SecurityPolicy": "TLS_1_2",
            "Tags": _tag_list(cfg)}}
        resources[REST_MAPPING_ID] = {"Type": "AWS::ApiGateway::BasePathMapping",
                                      "Properties": {
            "DomainName": {"Ref": REST_DOMAIN_ID},
            "RestApiId": {"Ref": "RestAPI"},
            "Stage": rest_stage}}  # no BasePath: the empty mapping, /apps/... as is
        if rest.hosted_zone_id:
            resources.update(_alias_record(
                "RestDomainRecord", rest,
                {"Fn::GetAtt": [REST_DOMAIN_ID, "RegionalDomainName"]},
                {"Fn::GetAtt": [REST_DOMAIN_ID, "RegionalHostedZoneId"]}))
    return resources


def pusher_js_options(cfg: StageConfig) -> Optional[Dict[str, Any]]:
    """The pusher-js 8 options for the stage's WebSocket domain (None without one): TLS on
    443, WebSocket transports only, our ``/pusher/auth`` and ``/pusher/user-auth`` on the REST
    domain when there is one (else left for you to fill in)."""
    ws = cfg.websocket_domain
    if not ws:
        return None
    http = f"https://{cfg.rest_domain.name}" if cfg.rest_domain else "<HttpURL without />"
    return {"cluster": cfg.environment.get("PUSHER_CLUSTER") or "mt1",
            "wsHost": ws.name, "wsPort": 443, "wssPort": 443, "forceTLS": True,
            "enabledTransports": ["ws", "wss"], "disableStats": True,
            "channelAuthorization": {"endpoint": f"{http}/pusher/auth"},
            "userAuthentication": {"endpoint": f"{http}/pusher/user-auth"}}


def domain_outputs(cfg: StageConfig) -> Dict[str, Any]:
    """Outputs of the custom domains: the URLs, the pusher-js options (JSON), the server
    libraries' host, and the DNS target each name must point at (a CNAME, or an alias to the
    target and its hosted zone)."""
    outputs: Dict[str, Any] = {}
    ws = cfg.websocket_domain
    if ws:
        outputs.update({
            "WebSocketDomainURL": {"Description": "native clients: ?token=JWT; pusher-js: "
                                                  "PusherJsOptions",
                                   "Value": f"wss://{ws.name}/"},
            "PusherJsOptions": {"Description": "new Pusher(PUSHER_KEY, <these options>)",
                                "Value": json.dumps(pusher_js_options(cfg),
                                                    separators=(", ", ": "))},
            "WebSocketDomainTarget": {
                "Description": f"point {ws.name} here (CNAME, or alias in zone "
                               f"{CLOUDFRONT_HOSTED_ZONE_ID})",
                "Value": {"Fn::GetAtt": [WEBSOCKET_DISTRIBUTION_ID, "DomainName"]}},
        })
    rest = cfg.rest_domain
    if rest:
        outputs.update({
            "HttpDomainURL": {"Description": "REST API without the stage prefix",
                              "Value": f"https://{rest.name}/"},
            "PusherServerHost": {"Description": "server libraries: host (port 443, TLS)",
                                 "Value": rest.name},
            "HttpDomainTarget": {"Description": f"point {rest.name} here (CNAME, or alias "
                                                "with HttpDomainTargetZone)",
                                 "Value": {"Fn::GetAtt": [REST_DOMAIN_ID,
                                                          "RegionalDomainName"]}},
            "HttpDomainTargetZone": {"Value": {"Fn::GetAtt": [REST_DOMAIN_ID,
                                                              "RegionalHostedZoneId"]}},
        })
    return outputs


def describe_domains(cfg: StageConfig,
                     targets: Optional[Mapping[str, str]] = None) -> List[str]:
    """Lines that tell what the custom domains give: the pusher-js options, the server
    libraries' host, and the DNS record each name needs.

    Args:
        cfg: the stage.
        targets: deployed stack outputs (``WebSocketDomainTarget``, ``HttpDomainTarget``,
            ``HttpDomainTargetZone``), or None before deployment (the lines then name the
            outputs to read).
    Returns:
        the lines (empty when the stage has no custom domain).
    """
    targets = targets or {}
    lines: List[str] = []
    ws, rest = cfg.websocket_domain, cfg.rest_domain
    if ws:
        key = cfg.environment.get("PUSHER_KEY", "<PUSHER_KEY>")
        lines += [f"WebSocket domain: wss://{ws.name}/ (native: ?token=JWT)",
                  f"  pusher-js:  new Pusher('{key}', "
                  f"{json.dumps(pusher_js_options(cfg), separators=(', ', ': '))})"]
        target = targets.get("WebSocketDomainTarget", "the output WebSocketDomainTarget")
        lines.append(f"  DNS:        {ws.name} CNAME {target}" + (
            " (alias record created in " + ws.hosted_zone_id + ")" if ws.hosted_zone_id else
            f" (or a Route 53 alias, zone {CLOUDFRONT_HOSTED_ZONE_ID})"))
    if rest:
        lines += [f"REST domain:      https://{rest.name}/ (no stage prefix)",
                  f"  server libraries: host '{rest.name}', port 443, TLS "
                  f"(Python: pusher.Pusher(app_id, key, secret, host='{rest.name}', "
                  "ssl=True))"]
        target = targets.get("HttpDomainTarget", "the output HttpDomainTarget")
        zone = targets.get("HttpDomainTargetZone", "HttpDomainTargetZone")
        lines.append(f"  DNS:        {rest.name} CNAME {target}" + (
            " (alias record created in " + rest.hosted_zone_id + ")" if rest.hosted_zone_id
            else f" (or a Route 53 alias, zone {zone})"))
    return lines


def domain_template(cfg: StageConfig) -> Dict[str, Any]:
    """The ``make deploy`` path's stack ``<app>-<stage>-domains``: :func:`domain_resources` for
    APIs that ``chalice deploy`` made, given as the parameters ``WebsocketAPI`` and ``RestAPI``
    (their ids), and :func:`domain_outputs`."""
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"{cfg.app_name} {cfg.stage}: custom domains",
        "Parameters": {name: {"Type": "String", "Description": f"{what} API id"}
                       for name, what, domain in (("WebsocketAPI", "WebSocket",
                                                   cfg.websocket_domain),
                                                  ("RestAPI", "REST", cfg.rest_domain))
                       if domain},
        "Resources": domain_resources(cfg, cfg.api_gateway_stage),
        "Outputs": domain_outputs(cfg),
    }


# --- IAM ----------------------------------------------------------------------------------------

_ARN = re.compile(r"^arn:aws:(?P<service>[a-z0-9-]+):(?P<region>\*):(?P<account>\*?):(?P<rest>.*)$")


def scope_resource(arn: str) -> Any:
    """Pin a policy file ARN to the stack: partition, region, account (when the ARN has one:
    ``apigateway`` ARNs have none) and, for execute-api, the WebSocket API id become
    CloudFormation references. Returns a ``Fn::Sub`` or the ARN unchanged when it has no
    wildcard region."""
    match = _ARN.match(arn)
    if not match:
        return arn
    rest = match["rest"]
    if match["service"] == "execute-api" and rest.startswith("*/"):
        rest = "${WebsocketAPI}" + rest[1:]
    account = "${AWS::AccountId}" if match["account"] else ""
    return {"Fn::Sub": f"arn:${{AWS::Partition}}:{match['service']}:${{AWS::Region}}:"
                       f"{account}:{rest}"}


def scoped_policy(document: Mapping[str, Any]) -> Dict[str, Any]:
    """A copy of an IAM policy document with every resource passed through
    :func:`scope_resource`."""
    scoped = copy.deepcopy(dict(document))
    for statement in scoped["Statement"]:
        resources = statement["Resource"]
        if isinstance(resources, str):
            resources = [resources]
        statement["Resource"] = [scope_resource(r) for r in resources]
    return scoped


def _cfn_name(name: str) -> str:
    """Chalice's logical id for a function (``chalice.utils.to_cfn_resource_name``)."""
    from chalice.utils import to_cfn_resource_name

    return "APIHandler" if name == "api_handler" else to_cfn_resource_name(name)


# --- the merge template -------------------------------------------------------------------------

def authorizer_resources(cfg: StageConfig) -> Dict[str, Dict[str, Any]]:
    """The ``$connect`` REQUEST authorizer (no identity source: see the module docstring) and
    the permission for API Gateway to invoke ``ws_authorizer`` through it."""
    return {
        AUTHORIZER_ID: {
            "Type": "AWS::ApiGatewayV2::Authorizer",
            "Properties": {
                "ApiId": {"Ref": "WebsocketAPI"},
                "Name": cfg.authorizer_name,
                "AuthorizerType": "REQUEST",
                "AuthorizerUri": {"Fn::Sub": (
                    "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/"
                    "functions/${WsAuthorizer.Arn}/invocations")},
                **({"IdentitySource": IDENTITY_SOURCE} if IDENTITY_SOURCE else {}),
            },
        },
        "WsAuthorizerInvokePermission": {
            "Type": "AWS::Lambda::Permission",
            "Properties": {
                "FunctionName": {"Fn::GetAtt": ["WsAuthorizer", "Arn"]},
                "Action": "lambda:InvokeFunction",
                "Principal": "apigateway.amazonaws.com",
                # Lambda authorizer source ARN: <api>/authorizers/<authorizer id>
                "SourceArn": {"Fn::Sub": (
                    "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:"
                    "${WebsocketAPI}/authorizers/${" + AUTHORIZER_ID + "}")},
            },
        },
    }


def _deployment_id(fingerprint: Any) -> str:
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
    return f"WebsocketAPIDeployment{digest[:12]}"


def pin_websocket_deployment(template: Mapping[str, Any]) -> Dict[str, Any]:
    """Give the WebSocket stage's deployment a logical id that hashes the whole API.

    A stage serves a snapshot of the API taken when its ``AWS::ApiGatewayV2::Deployment``
    was created, and CloudFormation re-creates a deployment only when its logical id changes.
    So the id becomes ``WebsocketAPIDeployment<sha256[:12]>`` of every resource of
    :data:`WEBSOCKET_SNAPSHOT_TYPES` on ``WebsocketAPI`` (routes, integrations, authorizers,
    the API itself: type and properties), as found in the final, merged template: adding,
    removing or changing a route, an integration or the authorizer yields a new deployment,
    and an unchanged API keeps its id (no needless redeployment). The deployment also depends
    on every route, so the snapshot is taken after all of them exist.

    Args:
        template: a packaged SAM/CloudFormation template (``sam.json``) whose
            ``WebsocketAPIStage`` refers to a deployment.
    Returns:
        a copy with the deployment renamed and the stage pointing at it (the template
        unchanged when it has no WebSocket stage).
    """
    pinned = copy.deepcopy(dict(template))
    resources = pinned.get("Resources", {})
    stage = resources.get("WebsocketAPIStage")
    if not stage:
        return pinned
    current = stage["Properties"]["DeploymentId"]["Ref"]
    snapshot = {name: {"Type": r["Type"], "Properties": r.get("Properties", {})}
                for name, r in resources.items()
                if r.get("Type") in WEBSOCKET_SNAPSHOT_TYPES
                and (name == "WebsocketAPI"
                     or r.get("Properties", {}).get("ApiId") == {"Ref": "WebsocketAPI"})}
    routes = sorted(name for name, r in snapshot.items()
                    if r["Type"] in ("AWS::ApiGatewayV2::Route",
                                     "AWS::ApiGatewayV2::Authorizer"))
    deployment = resources.pop(current)
    depends = deployment.get("DependsOn", [])
    depends = [depends] if isinstance(depends, str) else list(depends)
    deployment["DependsOn"] = sorted(set(depends) | set(routes))
    new_id = _deployment_id(snapshot)
    resources[new_id] = deployment
    stage["Properties"]["DeploymentId"] = {"Ref": new_id}
    return pinned


def cors_response_headers(cfg: StageConfig) -> Dict[str, str]:
    """The CORS headers of the REST API's gateway responses (:data:`CORS_GATEWAY_RESPONSES`),
    as API Gateway takes them: header name -> quoted static value.

    Returns:
        ``{"Access-Control-Allow-Origin": "'<origin>'"}`` (plus ``"Vary": "'Origin'"`` for a
        specific origin) for the stage's ``CORS_ALLOW_ORIGIN`` (``*`` on dev when unset, as
        :func:`chalicelib.settings.app_settings`); empty when the stage allows no origin.
    Raises:
        SystemExit: an origin holding a quote or a comma (never a valid origin).
    """
    origin = cfg.environment.get("CORS_ALLOW_ORIGIN") or ("*" if cfg.stage == "dev" else "")
    origin = origin.strip()
    if not origin:
        return {}
    if any(char in origin for char in "',\\"):
        raise SystemExit(f"stage {cfg.stage}: CORS_ALLOW_ORIGIN is not an origin")
    headers = {"Access-Control-Allow-Origin": f"'{origin}'"}
    if origin != "*":
        headers["Vary"] = "'Origin'"
    return headers


def merge_template(cfg: StageConfig, region: Optional[str] = None) -> Dict[str, Any]:
    """The ``--merge-template`` for ``chalice package --stage <stage>``.

    With ``infra.websocket_domain`` / ``infra.rest_domain`` set it also holds the custom
    domains (:func:`domain_resources`, :func:`domain_outputs`); ``region`` (the stack's, when
    known) is then checked against the certificates (:func:`check_domain_regions`).

    Adds the table, the queues, the authorizer and its permission, log groups with the stage's
    retention; the stage's CORS headers on the REST API's gateway responses
    (:func:`cors_response_headers`); attaches the authorizer to ``$connect``; points the stage at a new deployment
    whose logical id hashes the authorizer and route settings, so CloudFormation creates a
    fresh deployment (a real redeployment) whenever they change, including when this merge is
    first applied to a stack packaged without it (``AWS::ApiGatewayV2::Deployment`` has no
    property whose update would re-snapshot the API); sets ``ReportBatchItemFailures`` on the
    SQS event and points it at the queue created here; names every function as
    ``chalice deploy`` does and pins the policy files' resources to this stack.
    """
    resources: Dict[str, Any] = {"ConnectionsTable": table_resource(cfg),
                                 **queue_resources(cfg), **authorizer_resources(cfg),
                                 **monitoring_resources(cfg)}
    resources["RegistryStreamEventSource"] = {
        "Type": "AWS::Lambda::EventSourceMapping",
        "Properties": {
            "FunctionName": {"Ref": _cfn_name("registry_stream")},
            "EventSourceArn": {"Fn::GetAtt": ["ConnectionsTable", "StreamArn"]},
            "StartingPosition": "LATEST", "BatchSize": 100, "MaximumRetryAttempts": 2,
            "FilterCriteria": {"Filters": [{"Pattern": REGISTRY_STREAM_FILTER}]},
        },
    }

    for function in FUNCTIONS:
        logical = _cfn_name(function)
        properties: Dict[str, Any] = {"FunctionName": cfg.function_name(function)}
        if function in PUSHING_FUNCTIONS:
            properties["Environment"] = {"Variables": {
                "WEBSOCKET_API_ID": {"Ref": "WebsocketAPI"}}}
        resources[logical] = {"Properties": properties}
        policy = json.loads(cfg.policy_files[function].read_text())
        role_logical = _cfn_name(f"{function}_role")
        resources[role_logical] = {"Properties": {"Policies": [{
            "PolicyName": f"{role_logical}Policy", "PolicyDocument": scoped_policy(policy)}]}}
        resources[f"{logical}LogGroup"] = {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {"LogGroupName": {"Fn::Sub": f"/aws/lambda/${{{logical}}}"},
                           "RetentionInDays": cfg.log_retention_days},
        }

    resources["PushWorker"]["Properties"]["Events"] = {SQS_EVENT_NAME: {"Properties": {
        # a string replaces Chalice's hand-built ARN: the reference orders the queue first
        "Queue": {"Fn::Sub": "${PushQueue.Arn}"},
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
    }}}

    route = {"AuthorizationType": "CUSTOM", "AuthorizerId": {"Ref": AUTHORIZER_ID}}
    resources["WebsocketConnectRoute"] = {"Properties": route}
    deployment = _deployment_id({"authorizer": resources[AUTHORIZER_ID], "route": route})
    resources[deployment] = {
        "Type": "AWS::ApiGatewayV2::Deployment",
        "DependsOn": [AUTHORIZER_ID, "WebsocketConnectRoute", "WebsocketMessageRoute",
                      "WebsocketDisconnectRoute"],
        "Properties": {"ApiId": {"Ref": "WebsocketAPI"},
                       "Description": "routes with the $connect authorizer"},
    }
    resources["WebsocketAPIStage"] = {"Properties": {"DeploymentId": {"Ref": deployment}}}

    cors = cors_response_headers(cfg)
    if cors:  # SAM writes these into the API's definition: a change redeploys the stage
        resources["RestAPI"] = {"Properties": {"GatewayResponses": {
            kind: {"ResponseParameters": {"Headers": cors}} for kind in CORS_GATEWAY_RESPONSES}}}

    if region is not None:
        check_domain_regions(cfg, region)
    resources.update(domain_resources(cfg, {"Ref": "RestAPI.Stage"}))

    suffix = "${AWS::URLSuffix}"
    outputs = {
        "WebSocketURL": {"Description": "clients connect here (token in the Authorization "
                                        "header or ?token=)",
                         "Value": {"Fn::Sub": f"wss://${{WebsocketAPI}}.execute-api."
                                              f"${{AWS::Region}}.{suffix}/"
                                              f"{cfg.api_gateway_stage}"}},
        "HttpURL": {"Description": "REST API: /me, /pusher/auth, /notifications ...",
                    "Value": {"Fn::Sub": f"https://${{RestAPI}}.execute-api.${{AWS::Region}}."
                                         f"{suffix}/{cfg.api_gateway_stage}/"}},
        **_data_outputs(),
        **_monitoring_outputs(cfg),
        **domain_outputs(cfg),
    }
    return {"Resources": resources, "Outputs": outputs}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("template", choices=("infrastructure", "merge", "domains"))
    parser.add_argument("--stage", default="prod")
    args = parser.parse_args(argv)
    cfg = load_stage(args.stage)
    if args.template == "domains" and not (cfg.websocket_domain or cfg.rest_domain):
        print(f"stage {args.stage} sets no custom domain (infra.websocket_domain, "
              "infra.rest_domain)", file=sys.stderr)
        return 1
    build = {"infrastructure": infrastructure_template, "merge": merge_template,
             "domains": domain_template}[args.template]
    json.dump(build(cfg), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
