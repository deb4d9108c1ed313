"""``make deploy STAGE=prod``: the whole ``chalice deploy`` path, from an empty account.

``chalice deploy`` creates the functions, both APIs and the SQS subscription, but it cannot
create a table or a queue, attach a WebSocket authorizer, or ask for partial batch responses.
This script does the rest, in order:

1. checks that need no change: the Pusher secret exists in SSM as a SecureString
   (staging/prod), and the policy files' ARNs are in the region's partition (``aws``,
   ``aws-cn``, ``aws-us-gov``) — before anything is created;
2. the infrastructure stack (table, push queue, dead-letter queue) with CloudFormation
   (:func:`infra.templates.infrastructure_template`; both kept when the stack is deleted);
3. ``chalice deploy --stage <stage>`` (without bytecode in the zip);
4. converges what Chalice left out: the ``ws_authorizer`` REQUEST authorizer on ``$connect``
   and API Gateway's permission to invoke it, ``ReportBatchItemFailures`` on the push
   worker's event source mapping, ``WEBSOCKET_API_ID`` for the functions that push outside a
   WebSocket handler (it saves them a lookup: without it they find the API by its name,
   :func:`chalicelib.delivery.post.discover_api_id`, so a plain ``chalice deploy`` or a failure
   before this step does not stop pushes), log retention; then redeploys the WebSocket stage if the
   API changed; the custom domains, when the stage sets any (a stack of their own,
   :func:`infra.templates.domain_template`, created or updated);
5. prints the endpoints (and the custom domains' pusher-js options, server host, DNS targets).

Step 4 reads before it writes and writes only what differs, so running it on a deployment that
already has everything makes no write call at all (``--attach-only`` runs steps 4-5 alone).
Note that every ``chalice deploy`` deletes and re-creates the WebSocket routes, so after step 3
the new ``$connect`` route is re-attached and the stage redeployed each time; Chalice itself
does not redeploy the stage on updates, so the live stage keeps its authorizer in between.

Every AWS call goes through clients from ``client_factory`` so tests can hand in moto or
botocore-Stubber clients.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra import templates  # noqa: E402
from infra.templates import StageConfig  # noqa: E402

#: stack states that only a delete gets out of (a failed creation, a failed delete)
STACK_STATES_TO_DELETE = ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED")
#: statement id of the authorizer's invoke permission on ws_authorizer
PERMISSION_STATEMENT_ID = "apigateway-ws-connect-authorizer"
BATCH_ITEM_FAILURES = "ReportBatchItemFailures"


class DeployError(Exception):
    """A deployment step cannot go on; the message says what to do."""


@dataclass(frozen=True)
class DeployedApp:
    """What ``chalice deploy`` recorded in ``.chalice/deployed/<stage>.json``.

    Attributes:
        functions: Chalice function name -> Lambda ARN.
        websocket_api_id, websocket_url, rest_api_id, rest_url: the two APIs.
        sqs_event_uuid: the push worker's event source mapping UUID.
    """

    functions: Dict[str, str]
    websocket_api_id: str
    websocket_url: str
    rest_api_id: Optional[str]
    rest_url: Optional[str]
    sqs_event_uuid: str

    @classmethod
    def load(cls, path: Path) -> "DeployedApp":
        """Parse a Chalice deployed-values file. Raises DeployError when a part is missing."""
        if not path.exists():
            raise DeployError(f"{path} not found: did `chalice deploy` succeed?")
        resources = json.loads(path.read_text()).get("resources", [])
        functions, ws, rest, sqs = {}, None, None, None
        for resource in resources:
            kind = resource.get("resource_type")
            if kind == "lambda_function":
                functions[resource["name"]] = resource["lambda_arn"]
            elif kind == "websocket_api":
                ws = resource
            elif kind == "rest_api":
                rest = resource
            elif kind == "sqs_event":
                sqs = resource
        if ws is None or sqs is None or "ws_authorizer" not in functions:
            raise DeployError(f"{path} lacks the WebSocket API, the SQS subscription or "
                              "ws_authorizer: is app.py the realtime app?")
        return cls(functions=functions, websocket_api_id=ws["websocket_api_id"],
                   websocket_url=ws["websocket_api_url"],
                   rest_api_id=(rest or {}).get("rest_api_id"),
                   rest_url=(rest or {}).get("rest_api_url"),
                   sqs_event_uuid=sqs["event_uuid"])


def _region_of(arn: str) -> str:
    return arn.split(":")[3]


def _partition_of(arn: str) -> str:
    return arn.split(":")[1]


def _account_of(arn: str) -> str:
    return arn.split(":")[4]


class Deployer:
    """One stage's ``make deploy``.

    Args:
        cfg: the stage (:func:`infra.templates.load_stage`).
        client_factory: ``service name -> boto3 client`` (one client per service is reused).
        project_dir: the Chalice project (``.chalice/`` lives there).
        run: runs a command list (``subprocess.run``-like); used for ``chalice deploy``.
        echo: progress output (one line per step).
    """

    def __init__(self, cfg: StageConfig, client_factory: Callable[[str], Any], *,
                 project_dir: Path = ROOT, run: Callable[..., Any] = subprocess.run,
                 echo: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self._factory = client_factory
        self._clients: Dict[str, Any] = {}
        self.project_dir = project_dir
        self._run = run
        self.echo = echo
        self.changes: List[str] = []
        #: outputs of the custom domain stack after :meth:`attach` (empty without domains)
        self.domain_outputs: Dict[str, str] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self._factory(service)
        return self._clients[service]

    def _changed(self, what: str) -> None:
        self.changes.append(what)
        self.echo(f"  changed: {what}")

    # --- 2. infrastructure stack ---------------------------------------------------------------

    def deploy_infrastructure(self, *, waiter_delay: int = 5) -> str:
        """Create or update the table/queue stack. Returns ``created``, ``updated`` or
        ``unchanged``. Raises DeployError when the stack is in a state that needs a human."""
        return self._converge_stack(
            self.cfg.infrastructure_stack_name, templates.infrastructure_template(self.cfg),
            before_create=self.check_no_orphans, waiter_delay=waiter_delay)

    def _describe_stack(self, name: str) -> Optional[Dict[str, Any]]:
        """The stack ``name`` as ``DescribeStacks`` gives it, or None when it does not exist."""
        from botocore.exceptions import ClientError

        try:
            stacks = self.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
        except ClientError as exc:
            if "does not exist" not in str(exc):
                raise
            return None
        return stacks[0] if stacks else None

    def _converge_stack(self, name: str, template: Dict[str, Any], *,
                        parameters: Optional[Dict[str, str]] = None,
                        before_create: Optional[Callable[[], None]] = None,
                        waiter_delay: int = 5) -> str:
        """Create stack ``name`` from ``template`` (tagged, rolled back on failure, termination
        protection outside dev), or update it when its template, parameters or tags differ.

        Returns:
            ``created``, ``updated`` or ``unchanged``.
        Raises:
            DeployError: the stack is in a state that needs a human (the message says what).
        """
        cfn = self.client("cloudformation")
        body = json.dumps(template)
        tags = [{"Key": k, "Value": v} for k, v in sorted(self.cfg.tags.items())]
        wanted_parameters = sorted((parameters or {}).items())
        stack_parameters = [{"ParameterKey": k, "ParameterValue": v}
                            for k, v in wanted_parameters]
        from botocore.exceptions import ClientError

        stack = self._describe_stack(name)
        wait = {"StackName": name, "WaiterConfig": {"Delay": waiter_delay, "MaxAttempts": 360}}
        if stack is None:
            if before_create is not None:
                before_create()
            cfn.create_stack(StackName=name, TemplateBody=body, Tags=tags,
                             OnFailure="ROLLBACK",
                             EnableTerminationProtection=self.cfg.stage != "dev",
                             **({"Parameters": stack_parameters} if parameters else {}))
            cfn.get_waiter("stack_create_complete").wait(**wait)
            self._changed(f"stack {name} created")
            return "created"
        status = stack["StackStatus"]
        if status in STACK_STATES_TO_DELETE:
            raise DeployError(f"stack {name} is {status} and must be deleted before it can be "
                              f"created again: {self.delete_stack_hint(name)}, then run again")
        if status == "UPDATE_ROLLBACK_FAILED":
            raise DeployError(f"stack {name} is {status}: aws cloudformation "
                              f"continue-update-rollback --stack-name {name}, then run again")
        if status.endswith("_IN_PROGRESS"):
            raise DeployError(f"stack {name} is {status}: wait until it finishes "
                              f"(aws cloudformation wait stack-update-complete --stack-name "
                              f"{name}), then run again")
        current = cfn.get_template(StackName=name, TemplateStage="Original")["TemplateBody"]
        if isinstance(current, str):  # botocore decodes JSON bodies itself; YAML stays text
            try:
                current = json.loads(current)
            except ValueError:
                current = None
        current_tags = sorted((t["Key"], t["Value"]) for t in stack.get("Tags", []))
        current_parameters = sorted((p["ParameterKey"], p["ParameterValue"])
                                    for p in stack.get("Parameters", []))
        if current == json.loads(body) and current_tags == sorted(self.cfg.tags.items()) \
                and current_parameters == wanted_parameters:
            self.echo(f"  stack {name}: unchanged")
            return "unchanged"
        try:
            cfn.update_stack(StackName=name, TemplateBody=body, Tags=tags,
                             **({"Parameters": stack_parameters} if parameters else {}))
        except ClientError as exc:
            if "No updates are to be performed" in str(exc):
                self.echo(f"  stack {name}: unchanged")
                return "unchanged"
            raise
        cfn.get_waiter("stack_update_complete").wait(**wait)
        self._changed(f"stack {name} updated")
        return "updated"

    def delete_stack_hint(self, name: Optional[str] = None) -> str:
        """The commands that delete a stack (the infrastructure stack by default): termination
        protection (on for staging/prod) first, else ``delete-stack`` is refused."""
        name = name or self.cfg.infrastructure_stack_name
        return (f"aws cloudformation update-termination-protection "
                f"--no-enable-termination-protection --stack-name {name}; "
                f"aws cloudformation delete-stack --stack-name {name}")

    def check_no_orphans(self) -> None:
        """Before the stack is created: no table or queue of its names may exist already (kept
        from a deleted stack: DeletionPolicy), or the creation would fail half-way.
        Raises DeployError naming them and the ways out."""
        from botocore.exceptions import ClientError

        found = []
        try:
            self.client("dynamodb").describe_table(TableName=self.cfg.table_name)
            found.append(f"table {self.cfg.table_name}")
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
        sqs = self.client("sqs")
        for queue in (self.cfg.queue_name, self.cfg.dlq_name):
            try:
                sqs.get_queue_url(QueueName=queue)
                found.append(f"queue {queue}")
            except ClientError as exc:
                if "NonExistentQueue" not in exc.response["Error"]["Code"]:
                    raise
        if found:
            raise DeployError(
                f"{', '.join(found)} already exist but stack "
                f"{self.cfg.infrastructure_stack_name} does not (a deleted stack keeps its "
                "table and queues): import them into a new stack (aws cloudformation "
                "create-change-set --change-set-type IMPORT with the template of "
                "`python -m infra.templates infrastructure`), or delete them if their "
                "connections and pushes may go, then run again")

    # --- 1. checks ------------------------------------------------------------------------------

    def check_partition(self, region: str) -> None:
        """Every ARN of the stage's policy files is in ``region``'s partition (``aws``,
        ``aws-cn``, ``aws-us-gov``): ``chalice deploy`` uses the files as they are, and IAM
        never matches an ``arn:aws:`` resource in another partition. Raises DeployError
        naming the file to edit."""
        import boto3

        partition = boto3.session.Session().get_partition_for_region(region)
        for path in sorted(set(self.cfg.policy_files.values())):
            for statement in json.loads(path.read_text()).get("Statement", []):
                resources = statement.get("Resource", [])
                for arn in [resources] if isinstance(resources, str) else resources:
                    if arn.startswith("arn:") and arn.split(":")[1] != partition:
                        raise DeployError(
                            f"{path.name} grants {arn}, but {region} is in the {partition} "
                            f"partition: write arn:{partition}: in .chalice/policy-*.json "
                            "for this deployment")


    def check_domain_certificates(self, region: str) -> None:
        """The custom domains' certificates are in the regions AWS reads them from
        (:func:`infra.templates.check_domain_regions`). Raises DeployError naming the one to
        request or import, before anything is created."""
        try:
            templates.check_domain_regions(self.cfg, region)
        except SystemExit as exc:
            raise DeployError(str(exc)) from None

    def check_secret(self) -> None:
        """The ``PUSHER_SECRET_PARAMETER`` must exist as a SecureString (never read here).
        Raises DeployError with the command that creates it."""
        name = self.cfg.secret_parameter
        if not name:
            return
        found = self.client("ssm").describe_parameters(
            ParameterFilters=[{"Key": "Name", "Values": [name]}])["Parameters"]
        hint = (f"create it: aws ssm put-parameter --name {name} --type SecureString "
                "--value \"$PUSHER_SECRET\"")
        if not found:
            raise DeployError(f"SSM parameter {name} does not exist; {hint}")
        if found[0].get("Type") != "SecureString":
            raise DeployError(f"SSM parameter {name} is {found[0].get('Type')}, not "
                              f"SecureString; delete it and {hint}")

    # --- 3. chalice deploy ---------------------------------------------------------------------

    def chalice_deploy(self) -> None:
        """``chalice deploy --stage <stage>``, with no bytecode for Chalice to zip
        (:func:`infra.package.remove_bytecode`, ``PYTHONDONTWRITEBYTECODE``)."""
        from infra import package

        chalice = Path(sys.executable).parent / "chalice"
        command = [str(chalice) if chalice.exists() else "chalice", "--project-dir",
                   str(self.project_dir), "deploy", "--stage", self.cfg.stage]
        self.echo("$ " + " ".join(command[0:1] + command[3:]))
        package.remove_bytecode(self.project_dir)
        # app.py names the push worker's queue when chalice imports it, from this process's
        # environment (not config.json's): give it the stage's, whatever the shell has
        stage_env = {name: self.cfg.environment[name] for name in ("STAGE", "PUSH_QUEUE_NAME")
                     if name in self.cfg.environment}
        self._run(command, check=True, cwd=self.project_dir,
                  env={**os.environ, **stage_env, "PYTHONDONTWRITEBYTECODE": "1"})

    def deployed(self) -> DeployedApp:
        return DeployedApp.load(
            self.project_dir / ".chalice" / "deployed" / f"{self.cfg.stage}.json")

    # --- 4. what Chalice cannot do -------------------------------------------------------------

    def ensure_authorizer(self, api_id: str, function_arn: str) -> str:
        """The REQUEST authorizer named ``<app>-<stage>-ws-authorizer`` pointing at
        ``function_arn`` with no identity source. Returns its id."""
        apigw = self.client("apigatewayv2")
        uri = (f"arn:{_partition_of(function_arn)}:apigateway:{_region_of(function_arn)}:"
               f"lambda:path/2015-03-31/functions/{function_arn}/invocations")
        wanted = {"AuthorizerType": "REQUEST", "AuthorizerUri": uri,
                  "IdentitySource": list(templates.IDENTITY_SOURCE)}
        existing = [item for item in _paginate(apigw.get_authorizers, "Items", ApiId=api_id)
                    if item.get("Name") == self.cfg.authorizer_name]
        if not existing:
            created = apigw.create_authorizer(ApiId=api_id, Name=self.cfg.authorizer_name,
                                              **wanted)
            self._changed(f"authorizer {self.cfg.authorizer_name} created")
            return created["AuthorizerId"]
        current = existing[0]
        if any(current.get(key, [] if key == "IdentitySource" else None) != value
               for key, value in wanted.items()):
            apigw.update_authorizer(ApiId=api_id, AuthorizerId=current["AuthorizerId"],
                                    **wanted)
            self._changed(f"authorizer {self.cfg.authorizer_name} updated")
        return current["AuthorizerId"]

    def ensure_authorizer_permission(self, function_arn: str, api_id: str,
                                     authorizer_id: str) -> None:
        """API Gateway may invoke ``ws_authorizer`` through this authorizer, and only it."""
        lam = self.client("lambda")
        source_arn = (f"arn:{_partition_of(function_arn)}:execute-api:"
                      f"{_region_of(function_arn)}:{_account_of(function_arn)}:"
                      f"{api_id}/authorizers/{authorizer_id}")
        try:
            policy = json.loads(lam.get_policy(FunctionName=function_arn)["Policy"])
        except lam.exceptions.ResourceNotFoundException:
            policy = {"Statement": []}
        for statement in policy.get("Statement", []):
            if statement.get("Sid") != PERMISSION_STATEMENT_ID:
                continue
            current = statement.get("Condition", {}).get("ArnLike", {}).get("AWS:SourceArn")
            if current == source_arn:
                return
            lam.remove_permission(FunctionName=function_arn,
                                  StatementId=PERMISSION_STATEMENT_ID)
        lam.add_permission(FunctionName=function_arn, StatementId=PERMISSION_STATEMENT_ID,
                           Action="lambda:InvokeFunction",
                           Principal="apigateway.amazonaws.com", SourceArn=source_arn)
        self._changed("permission for API Gateway to invoke ws_authorizer")

    def ensure_connect_route(self, api_id: str, authorizer_id: str) -> None:
        """``$connect`` uses the authorizer (``AuthorizationType`` CUSTOM)."""
        apigw = self.client("apigatewayv2")
        routes = [r for r in _paginate(apigw.get_routes, "Items", ApiId=api_id)
                  if r.get("RouteKey") == "$connect"]
        if not routes:
            raise DeployError("the WebSocket API has no $connect route: "
                              "did `chalice deploy` finish?")
        route = routes[0]
        if route.get("AuthorizationType") == "CUSTOM" \
                and route.get("AuthorizerId") == authorizer_id:
            return
        apigw.update_route(ApiId=api_id, RouteId=route["RouteId"],
                           AuthorizationType="CUSTOM", AuthorizerId=authorizer_id)
        self._changed("$connect route uses the authorizer")

    def ensure_batch_item_failures(self, uuid: str) -> None:
        """The push worker's event source mapping reports partial batch failures."""
        lam = self.client("lambda")
        mapping = lam.get_event_source_mapping(UUID=uuid)
        if BATCH_ITEM_FAILURES in (mapping.get("FunctionResponseTypes") or []):
            return
        lam.update_event_source_mapping(UUID=uuid, FunctionResponseTypes=[BATCH_ITEM_FAILURES])
        self._changed("push worker event source mapping: ReportBatchItemFailures")

    def ensure_registry_stream(self, function_arn: str) -> None:
        """``registry_stream`` reads the registry's stream (TTL deletes only, filtered by
        :data:`infra.templates.REGISTRY_STREAM_FILTER`): one event source mapping."""
        table = self.client("dynamodb").describe_table(TableName=self.cfg.table_name)["Table"]
        stream_arn = table.get("LatestStreamArn")
        if not stream_arn:
            raise DeployError(f"table {self.cfg.table_name} has no stream: run the "
                              "infrastructure step (make deploy) first")
        lam = self.client("lambda")
        mappings = lam.list_event_source_mappings(EventSourceArn=stream_arn,
                                                  FunctionName=function_arn)
        if mappings.get("EventSourceMappings"):
            return
        lam.create_event_source_mapping(
            EventSourceArn=stream_arn, FunctionName=function_arn, StartingPosition="LATEST",
            BatchSize=100, MaximumRetryAttempts=2,
            FilterCriteria={"Filters": [{"Pattern": templates.REGISTRY_STREAM_FILTER}]})
        self._changed("registry stream -> registry_stream (TTL deletes: member_removed)")

    def ensure_environment(self, function_arn: str, extra: Dict[str, str]) -> None:
        """Add ``extra`` to a function's environment, keeping every other variable."""
        lam = self.client("lambda")
        config = lam.get_function_configuration(FunctionName=function_arn)
        variables = dict((config.get("Environment") or {}).get("Variables") or {})
        if all(variables.get(k) == v for k, v in extra.items()):
            return
        variables.update(extra)
        lam.get_waiter("function_updated_v2").wait(
            FunctionName=function_arn, WaiterConfig={"Delay": 2, "MaxAttempts": 60})
        lam.update_function_configuration(FunctionName=function_arn,
                                          Environment={"Variables": variables})
        self._changed(f"environment of {function_arn.rsplit(':', 1)[-1]}: "
                      f"{', '.join(sorted(extra))}")

    def ensure_log_retention(self, function_names: List[str]) -> None:
        """Each function's log group exists with the stage's retention (days)."""
        logs = self.client("logs")
        days = self.cfg.log_retention_days
        for function in function_names:
            group = f"/aws/lambda/{function}"
            found = [g for g in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
                     if g["logGroupName"] == group]
            if not found:
                logs.create_log_group(logGroupName=group)
            elif found[0].get("retentionInDays") == days:
                continue
            logs.put_retention_policy(logGroupName=group, retentionInDays=days)
            self._changed(f"log retention {days} days: {group}")

    def redeploy_stage(self, api_id: str) -> str:
        """A new deployment of the WebSocket API on the stage; returns its id."""
        deployment = self.client("apigatewayv2").create_deployment(
            ApiId=api_id, StageName=self.cfg.api_gateway_stage,
            Description="make deploy: routes with the $connect authorizer")
        self._changed(f"stage {self.cfg.api_gateway_stage} redeployed")
        return deployment["DeploymentId"]

    def attach(self, app: DeployedApp) -> List[str]:
        """Step 4. Returns the list of changes made (empty when all was in place)."""
        before = len(self.changes)
        authorizer_arn = app.functions["ws_authorizer"]
        authorizer_id = self.ensure_authorizer(app.websocket_api_id, authorizer_arn)
        self.ensure_connect_route(app.websocket_api_id, authorizer_id)
        api_changed = len(self.changes) > before
        self.ensure_authorizer_permission(authorizer_arn, app.websocket_api_id, authorizer_id)
        if api_changed:  # a WebSocket stage serves a snapshot: new routes need a deployment
            self.redeploy_stage(app.websocket_api_id)
        self.ensure_batch_item_failures(app.sqs_event_uuid)
        if "registry_stream" in app.functions:
            self.ensure_registry_stream(app.functions["registry_stream"])
        for function in templates.PUSHING_FUNCTIONS:
            if function in app.functions:
                self.ensure_environment(app.functions[function],
                                        {"WEBSOCKET_API_ID": app.websocket_api_id})
        if self.cfg.environment.get("WEBSOCKET_API_ID") != app.websocket_api_id:
            # chalice deploy resets the environment to config.json's; until step 4 runs again
            # the functions look the API up by name (one GetApis per cold start)
            self.echo(f"  optional: add \"WEBSOCKET_API_ID\": \"{app.websocket_api_id}\" to "
                      f"stages.{self.cfg.stage}.environment_variables in .chalice/config.json "
                      f"(saves the functions a lookup of {self.cfg.websocket_api_name} per "
                      "cold start)")
        self.ensure_log_retention([self.cfg.function_name(f) for f in templates.FUNCTIONS
                                   if f in app.functions])
        self.ensure_cors_gateway_responses(app.rest_api_id)
        self.domain_outputs = self.ensure_domains(app)
        return self.changes[before:]

    def ensure_cors_gateway_responses(self, rest_api_id: Optional[str]) -> None:
        """Put the stage's CORS headers (:func:`infra.templates.cors_response_headers`) on the
        REST API's gateway responses (:data:`infra.templates.CORS_GATEWAY_RESPONSES`), then
        redeploy its stage if anything changed. ``chalice deploy`` overwrites the API's
        definition, and with it these, on every run: this puts them back."""
        headers = templates.cors_response_headers(self.cfg)
        if not headers or not rest_api_id:
            return
        wanted = {f"gatewayresponse.header.{name}": value for name, value in headers.items()}
        api = self.client("apigateway")
        changed = False
        for kind in templates.CORS_GATEWAY_RESPONSES:
            try:
                current = api.get_gateway_response(
                    restApiId=rest_api_id, responseType=kind).get("responseParameters") or {}
            except api.exceptions.NotFoundException:  # moto; AWS answers the default response
                current = {}
            if all(current.get(name) == value for name, value in wanted.items()):
                continue
            api.put_gateway_response(restApiId=rest_api_id, responseType=kind,
                                     responseParameters={**current, **wanted})
            self._changed(f"CORS headers on the REST API's {kind} gateway response")
            changed = True
        if changed:  # gateway responses reach clients with the next deployment of the stage
            api.create_deployment(restApiId=rest_api_id, stageName=self.cfg.api_gateway_stage,
                                  description="gateway responses with the stage's CORS headers")

    def ensure_domains(self, app: DeployedApp, *, waiter_delay: int = 5) -> Dict[str, str]:
        """The stage's custom domains (``infra.websocket_domain``, ``infra.rest_domain``): the
        stack ``<app>-<stage>-domains`` (:func:`infra.templates.domain_template`) created, or
        updated when the settings or the APIs' ids changed (a ``chalice deploy`` that
        re-creates an API gives it a new id: the CloudFront origin and the base path mapping
        follow). Nothing is written when all is in place.

        Returns:
            the stack's outputs (``OutputKey`` -> ``OutputValue``): the DNS targets, the
            pusher-js options ...; empty when the stage has no custom domain (a domain stack
            left from earlier settings is named, with the command that deletes it).
        Raises:
            DeployError: a REST domain without a REST API, or a stack that needs a human.
        """
        cfg, name = self.cfg, self.cfg.domain_stack_name
        if not (cfg.websocket_domain or cfg.rest_domain):
            if self._describe_stack(name) is not None:
                self.echo(f"  stack {name} is left from custom domains no longer in "
                          f"config.json: {self.delete_stack_hint(name)}")
            return {}
        if cfg.rest_domain and not app.rest_api_id:
            raise DeployError(f"infra.rest_domain is set but `chalice deploy` recorded no REST "
                              f"API for stage {cfg.stage}")
        template = templates.domain_template(cfg)
        ids = {"WebsocketAPI": app.websocket_api_id, "RestAPI": app.rest_api_id or ""}
        self._converge_stack(name, template, waiter_delay=waiter_delay,
                             parameters={k: ids[k] for k in template["Parameters"]})
        stack = self._describe_stack(name) or {}
        return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}

    # --- 5. endpoints --------------------------------------------------------------------------

    def endpoints(self, app: DeployedApp) -> Dict[str, Optional[str]]:
        return {"WebSocket": app.websocket_url, "HTTP": app.rest_url}

    def run(self, *, attach_only: bool = False) -> Dict[str, Optional[str]]:
        """The whole path (or steps 4-5 with ``attach_only``). Returns the endpoints."""
        if not attach_only:
            self.echo("[1/5] Pusher secret in SSM, policy partition, domain certificates")
            self.check_secret()
            region = self.client("ssm").meta.region_name
            self.check_partition(region)
            self.check_domain_certificates(region)
            self.echo(f"[2/5] infrastructure stack {self.cfg.infrastructure_stack_name}")
            self.deploy_infrastructure()
            self.echo(f"[3/5] chalice deploy --stage {self.cfg.stage}")
            self.chalice_deploy()
        app = self.deployed()
        self.echo("[4/5] $connect authorizer, partial batch responses, settings")
        if not self.attach(app):
            self.echo("  nothing to change")
        endpoints = self.endpoints(app)
        self.echo("[5/5] endpoints")
        for name, url in endpoints.items():
            self.echo(f"  {name:<10} {url}")
        for line in templates.describe_domains(self.cfg, self.domain_outputs):
            self.echo(f"  {line}")
        return endpoints


def _paginate(method: Callable[..., Dict[str, Any]], key: str, **kwargs) -> List[Any]:
    """Follow ``NextToken`` through an apigatewayv2 listing."""
    items: List[Any] = []
    while True:
        page = method(**kwargs)
        items.extend(page.get(key, []))
        token = page.get("NextToken")
        if not token:
            return items
        kwargs["NextToken"] = token


def boto3_client_factory(region: Optional[str] = None) -> Callable[[str], Any]:
    """Real AWS clients from the default credential chain."""
    import boto3

    session = boto3.session.Session(region_name=region)
    if session.region_name is None:
        raise DeployError("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), "
                          "or run `aws configure`")
    return session.client


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Deploy one stage to AWS (see docs/deploy.md).")
    parser.add_argument("--stage", default=os.environ.get("STAGE", "prod"))
    parser.add_argument("--region", default=None)
    parser.add_argument("--attach-only", action="store_true",
                        help="skip the stack and chalice deploy; converge step 4 only")
    args = parser.parse_args(argv)
    try:
        cfg = templates.load_stage(args.stage)
        deployer = Deployer(cfg, boto3_client_factory(args.region))
        deployer.run(attach_only=args.attach_only)
    except DeployError as exc:
        print(f"deploy failed: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"deploy failed: {exc.cmd[0]} exited with {exc.returncode}", file=sys.stderr)
        return exc.returncode or 1
    except Exception as exc:  # botocore: expired session, throttling, access denied ...
        from botocore.exceptions import BotoCoreError, ClientError

        if not isinstance(exc, (BotoCoreError, ClientError)):
            raise
        print(f"deploy failed: {exc}\nfix the cause, then run `make deploy STAGE={args.stage}` "
              f"again (or `python -m infra.deploy --stage {args.stage} --attach-only` when "
              "`chalice deploy` had finished); until then the functions find the WebSocket "
              "API by name", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
