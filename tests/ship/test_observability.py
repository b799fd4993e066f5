"""The chart's Grafana dashboard and PrometheusRule: optional, rendered right, and every query
parses and names only metrics the operator exports (tests/ship/promql_check.py)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.ship import promql_check
from tests.ship.chart_render import CHART_DIR, NAMESPACE, chart, find, one, render

ENABLED: dict[str, dict[str, Any]] = {"dashboards": {"enabled": True}, "prometheusRule": {"enabled": True}}
ALERTS = {
    "RespawnRunFailed",
    "RespawnPreemptionStorm",
    "RespawnAttemptPendingTooLong",
    "RespawnOperatorErrors",
    "RespawnOperatorDown",
}


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads((CHART_DIR / "dashboards" / "respawn.json").read_text())
    return dashboard


def _rule(values: dict[str, Any] | None = None) -> dict[str, Any]:
    return one(render(values or ENABLED), "PrometheusRule")


def test_neither_is_rendered_by_default() -> None:
    manifests = render()
    assert not find(manifests, "PrometheusRule") and not find(manifests, "ConfigMap")


def test_the_dashboard_configmap_carries_the_json_with_the_sidecar_label() -> None:
    cm = one(render(ENABLED), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1" and cm["metadata"]["namespace"] == NAMESPACE
    assert json.loads(cm["data"]["respawn.json"]) == _dashboard()
    moved = one(
        render({"dashboards": {"enabled": True, "namespace": "monitoring", "labels": {"dash": "yes"}}}), "ConfigMap"
    )
    assert moved["metadata"]["namespace"] == "monitoring"
    assert moved["metadata"]["labels"]["dash"] == "yes"  # Helm merges maps: the default label stays
    assert moved["metadata"]["labels"]["grafana_dashboard"] == "1"
    other = one(
        render({"dashboards": {"enabled": True, "labels": {"grafana_dashboard": None, "dash": "yes"}}}), "ConfigMap"
    )
    assert "grafana_dashboard" not in other["metadata"]["labels"]  # null removes it


def test_the_dashboard_works_in_any_grafana_through_a_datasource_variable() -> None:
    dash = _dashboard()
    (ds,) = [v for v in dash["templating"]["list"] if v["name"] == "datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    ids = []

    def check(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            ids.append(p["id"])
            if p["type"] != "row":
                assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
                assert p["targets"] and all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])
            check(p.get("panels", []))

    check(dash["panels"])
    assert len(ids) == len(set(ids)) and dash["uid"]


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    queries = " ".join(q for _, q in promql_check.dashboard_queries(_dashboard()))
    for metric in (
        "respawn_pipelineruns",  # runs by phase
        "respawn_attempts_started_total",  # attempts over time
        "respawn_preemptions_total",  # preemptions over time and by reason
        "respawn_preemption_lost_seconds_total",  # time lost to preemptions
        "respawn_reconcile_duration_seconds_bucket",  # reconcile latency
    ):
        assert metric in queries, metric


def test_every_dashboard_query_parses_and_names_only_exported_metrics() -> None:
    queries = promql_check.dashboard_queries(_dashboard())
    assert len(queries) > 15
    for where, expr in queries:
        promql = promql_check.substitute_grafana_variables(expr)
        assert not promql_check.unknown_metrics(promql), f"{where}: {expr}"


def test_the_rule_renders_with_every_alert_and_validates() -> None:
    rule = _rule()
    assert promql_check.rule_problems(rule) == []
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == ALERTS
    assert alerts["RespawnOperatorDown"]["expr"] == 'absent(up{job="respawn-metrics"} == 1)'
    svc = one(render(ENABLED), "Service")  # the ServiceMonitor's job label is the Service's name
    assert svc["metadata"]["name"] == "respawn-metrics"


def test_thresholds_and_labels_come_from_values() -> None:
    values = copy.deepcopy(ENABLED)
    values["prometheusRule"].update(
        labels={"release": "prometheus"},
        preemptionStorm={"preemptions": 3, "window": "1h", "severity": "critical"},
        attemptPendingTooLong={"minutes": 5},
        operatorErrors={"perMinute": 0.5, "for": "30m"},
        operatorDown={"job": "respawn-operator"},
    )
    rule = _rule(values)
    assert promql_check.rule_problems(rule) == []
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    storm = alerts["RespawnPreemptionStorm"]
    assert "[1h]" in storm["expr"] and storm["expr"].endswith("> 3") and storm["labels"]["severity"] == "critical"
    assert alerts["RespawnAttemptPendingTooLong"]["expr"].endswith("> 300")
    assert alerts["RespawnOperatorErrors"]["expr"].endswith("> 0.5") and alerts["RespawnOperatorErrors"]["for"] == "30m"
    assert 'job="respawn-operator"' in alerts["RespawnOperatorDown"]["expr"]


def test_the_rule_refuses_to_render_without_metrics() -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmError, match=r"metrics\.enabled"):
        chart().render({"prometheusRule": {"enabled": True}, "metrics": {"enabled": False}}, name="respawn")


# --- the checker catches what it must ----------------------------------------------------


def test_the_checker_knows_the_series_each_metric_type_exposes() -> None:
    exported = promql_check.exported_metrics()
    assert {
        "respawn_preemptions_total",
        "respawn_reconcile_duration_seconds_bucket",
        "respawn_pipelineruns",
    } <= exported
    assert "respawn_preemptions" not in exported and "respawn_reconcile_duration_seconds" not in exported


@pytest.mark.parametrize(
    "expr",
    [
        "sum(rate(respawn_preemption_total[5m]))",  # misspelled: no s
        'histogram_quantile(0.9, sum by (le) (rate(respawn_reconcile_duration_seconds[5m])))',  # no _bucket
        "respawn_pipelineruns + respawn_runs_failed_total",  # one good, one not
    ],
)
def test_a_misspelled_metric_is_caught(expr: str) -> None:
    assert promql_check.unknown_metrics(expr)


@pytest.mark.parametrize("expr", ["sum(rate(respawn_preemptions_total[5m])", "rate(respawn_pipelineruns)", ""])
def test_bad_promql_is_caught(expr: str) -> None:
    with pytest.raises(ValueError):
        promql_check.metric_names(expr)


def test_a_broken_rule_is_caught() -> None:
    rule = copy.deepcopy(_rule())
    rules = rule["spec"]["groups"][0]["rules"]
    rules[0]["expr"] = rules[0]["expr"].replace("respawn_runs_finished_total", "respawn_run_finished_total")
    rules[1]["for"] = "often"
    del rules[2]["annotations"]["summary"]
    del rules[3]["labels"]["severity"]
    rules[4]["expr"] = "absent(up{job=}"
    problems = promql_check.rule_problems(rule)
    assert len(problems) == 5, problems
    assert "respawn_run_finished_total" in problems[0]


def test_an_unknown_grafana_variable_is_caught() -> None:
    with pytest.raises(ValueError, match="namespace"):
        promql_check.substitute_grafana_variables('respawn_pipelineruns{namespace="$namespace"}')
