"""The dashboard, the alarms and the alarm topic (issue 12) in both infrastructure products:
the standalone stack of ``make deploy`` and the ``make package`` template (the real
``chalice package`` output, merged) — cfn-lint clean, offline, and consistent with the metrics
the functions emit (:data:`chalicelib.observability.METRICS`)."""
from __future__ import annotations

import copy
import json
import shutil

import pytest

from chalicelib import observability
from infra import package, templates

STAGE = "prod"
ALARMS = {"DeadLetterQueueAlarm", "AuthorizerErrorsAlarm", "RestApi5xxAlarm",
          "ThrottledPostsAlarm", "WorkerErrorsAlarm"}


def _project(tmp_path, **infra):
    """A copy of the project's .chalice with ``infra`` settings added to the stage."""
    shutil.copytree(package.ROOT / ".chalice", tmp_path / ".chalice",
                    ignore=shutil.ignore_patterns("deployed", "deployments"))
    path = tmp_path / ".chalice" / "config.json"
    config = json.loads(path.read_text())
    config["stages"][STAGE]["infra"].update(infra)
    path.write_text(json.dumps(config))
    return tmp_path


def _lint(template, tmp_path, name="template.json"):
    path = tmp_path / name
    path.write_text(json.dumps(template))
    return package.cfn_lint(path)


def _dashboard(resources):
    body = resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    return json.loads(body.replace("${AWS::Region}", "eu-west-1")
                      .replace("${AWS::AccountId}", "123456789012"))


def _emf_names(widgets, namespace):
    names = set()
    for widget in widgets:
        for metric in widget["properties"].get("metrics", []):
            if isinstance(metric, list) and metric[0] == namespace:
                names.add(metric[1])
            elif isinstance(metric[0], dict):  # [{"expression": "SEARCH(...)", ...}]
                expression = metric[0]["expression"]
                assert "{" + namespace + "," in expression
                names.add(expression.split('MetricName="', 1)[1].split('"', 1)[0])
    return names


@pytest.mark.parametrize("stage", ["dev", "staging", "prod"])
def test_the_standalone_stack_has_dashboard_and_alarms_and_lints(stage, tmp_path):
    cfg = templates.load_stage(stage)
    template = templates.infrastructure_template(cfg)
    resources = template["Resources"]
    assert ALARMS <= set(resources)
    assert resources["Dashboard"]["Properties"]["DashboardName"] == f"realtime-{stage}"
    assert "DashboardURL" in template["Outputs"]
    result = _lint(template, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint_catches_a_broken_alarm(tmp_path):
    template = templates.infrastructure_template(templates.load_stage(STAGE))
    broken = copy.deepcopy(template)
    broken["Resources"]["DeadLetterQueueAlarm"]["Properties"]["ComparisonOperator"] = "Bigger"
    result = _lint(broken, tmp_path)
    assert result.returncode != 0 and "E3030 'Bigger'" in result.stdout


def test_the_alarms_watch_what_the_issue_names(tmp_path):
    cfg = templates.load_stage(STAGE)
    resources = templates.infrastructure_template(cfg)["Resources"]

    def metrics(alarm):
        return [q["MetricStat"]["Metric"] for q in resources[alarm]["Properties"]["Metrics"]
                if "MetricStat" in q]

    (dlq,) = metrics("DeadLetterQueueAlarm")
    assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": "realtime-push-prod-dlq"}]
    assert {m["MetricName"] for m in metrics("AuthorizerErrorsAlarm")} == {"AuthorizerRefused"}
    reasons = {m["Dimensions"][0]["Value"] for m in metrics("AuthorizerErrorsAlarm")}
    assert reasons == {"unexpected", "not_configured", "jwks_unavailable"}  # not callers'
    (rest,) = metrics("RestApi5xxAlarm")
    assert rest["MetricName"] == "5XXError" and {"Name": "Stage", "Value": "prod"} in \
        rest["Dimensions"]
    (throttled,) = metrics("ThrottledPostsAlarm")
    assert (throttled["Namespace"], throttled["MetricName"]) == ("Realtime/prod",
                                                                 "MessagesThrottled")
    worker = metrics("WorkerErrorsAlarm")
    assert {"Name": "FunctionName", "Value": "realtime-prod-push_worker"} in \
        worker[0]["Dimensions"]
    for alarm in ALARMS:
        props = resources[alarm]["Properties"]
        assert props["AlarmName"].startswith("realtime-prod-")
        assert "AlarmActions" not in props  # no topic configured on prod in config.json
    for name in {m["MetricName"] for a in ALARMS for m in metrics(a)
                 if m["Namespace"] == "Realtime/prod"}:
        assert name in observability.METRICS


def test_the_dashboard_shows_every_metric_the_functions_emit():
    cfg = templates.load_stage(STAGE)
    dashboard = _dashboard(templates.infrastructure_template(cfg)["Resources"])
    names = _emf_names(dashboard["widgets"], cfg.metrics_namespace)
    assert names == set(observability.METRICS) - {"ConnectionsRefused"}
    assert all(w["properties"].get("region", "eu-west-1") == "eu-west-1"
               for w in dashboard["widgets"])
    (alarms,) = [w for w in dashboard["widgets"] if w["type"] == "alarm"]
    resources = templates.infrastructure_template(cfg)["Resources"]
    assert sorted(a.rsplit(":", 1)[1] for a in alarms["properties"]["alarms"]) == sorted(
        resources[a]["Properties"]["AlarmName"] for a in ALARMS)


def test_the_namespace_follows_the_stage_setting(tmp_path, monkeypatch):
    cfg = templates.load_stage("staging")
    assert cfg.metrics_namespace == "Realtime/staging"
    project = _project(tmp_path)
    path = project / ".chalice" / "config.json"
    config = json.loads(path.read_text())
    config["stages"]["staging"]["environment_variables"]["POWERTOOLS_METRICS_NAMESPACE"] = "X/y"
    path.write_text(json.dumps(config))
    assert templates.load_stage("staging", project).metrics_namespace == "X/y"


def test_alarm_emails_create_a_topic_every_alarm_notifies(tmp_path):
    project = _project(tmp_path, alarm_emails=["ops@example.com", "oncall@example.com"],
                       alarm_topic_arn="arn:aws:sns:eu-west-1:123456789012:pager")
    cfg = templates.load_stage(STAGE, project)
    template = templates.infrastructure_template(cfg)
    resources = template["Resources"]
    topic = resources["AlarmTopic"]
    assert topic["Type"] == "AWS::SNS::Topic"
    assert [s["Endpoint"] for s in topic["Properties"]["Subscription"]] == \
        ["ops@example.com", "oncall@example.com"]
    for alarm in ALARMS:
        assert resources[alarm]["Properties"]["AlarmActions"] == [
            {"Ref": "AlarmTopic"}, "arn:aws:sns:eu-west-1:123456789012:pager"]
    result = _lint(template, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("infra, message", [
    ({"alarm_emails": "ops@example.com"}, "alarm_emails must be a list"),
    ({"alarm_emails": ["not an address"]}, "alarm_emails must be a list"),
    ({"alarm_topic_arn": "pager"}, "alarm_topic_arn must be an SNS topic ARN"),
])
def test_invalid_alarm_settings_are_refused(tmp_path, infra, message):
    project = _project(tmp_path, **infra)
    with pytest.raises(SystemExit, match=message):
        templates.load_stage(STAGE, project)


def test_the_packaged_template_has_the_same_dashboard_and_alarms_and_lints(prod_package,
                                                                          prod_package_lint):
    # the session's `chalice package` of the prod stage, and its cfn-lint run
    # (tests/integration/conftest.py)
    assert STAGE == "prod"
    template = prod_package["template"]
    resources = template["Resources"]
    standalone = templates.infrastructure_template(templates.load_stage(STAGE))["Resources"]
    for name in ALARMS | {"Dashboard"}:
        assert resources[name] == standalone[name]
    assert "DashboardURL" in template["Outputs"]
    result = prod_package_lint
    assert result.returncode == 0, result.stdout + result.stderr
