"""Checks of the chart's Grafana dashboard and PrometheusRule against the operator's metrics.

PromQL is parsed with ``promql-parser`` (Python bindings of the Rust ``promql-parser`` crate,
the parser GreptimeDB uses): a syntax error raises, and the AST gives every metric a query
selects. A name is allowed if ``respawn_operator.metrics`` registers it with prometheus_client
(with the series names a counter or histogram exposes), or if Prometheus makes it (``up``).
"""

from __future__ import annotations

import re
from typing import Any

import promql_parser
from prometheus_client import REGISTRY

PROMETHEUS_METRICS = frozenset({"up"})
"""Series Prometheus itself writes for every target."""

GRAFANA_VARIABLES = {"__rate_interval": "5m", "__interval": "1m", "__range": "6h", "job": ".*"}
"""Grafana's built-in variables and the dashboard's own, as one value each (for parsing)."""

_SERIES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}

_DURATION = re.compile(r"^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")


def exported_metrics() -> frozenset[str]:
    """Every series name the operator's /metrics can show (families with no children yet included)."""
    import respawn_operator.metrics  # noqa: F401 - registers the operator's metrics

    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("respawn_"):
            names.update(family.name + suffix for suffix in _SERIES[family.type])
    return frozenset(names)


def substitute_grafana_variables(expr: str) -> str:
    """The query as Grafana sends it, with each ``$var`` / ``${var}`` replaced; unknown ones raise."""

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in GRAFANA_VARIABLES:
            raise ValueError(f"unknown dashboard variable ${name} in {expr!r}")
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects; raises ValueError if it does not parse or a selector has no plain name."""
    ast = promql_parser.parse(expr)
    names: set[str] = set()
    nameless: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name
            for m in node.matchers.matchers:
                if m.name == "__name__":
                    name = m.value if str(m.op) == "MatchOp.Equal" else None
            if name:
                names.add(name)
            else:
                nameless.append(str(node))

    promql_parser.walk(ast, pre_visit=visit)
    if nameless:
        raise ValueError(f"selectors without a plain metric name (cannot be checked): {nameless} in {expr!r}")
    return names


def unknown_metrics(expr: str) -> set[str]:
    """Names ``expr`` selects that neither the operator nor Prometheus exports."""
    return metric_names(expr) - exported_metrics() - PROMETHEUS_METRICS


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every query in the dashboard: panel targets (rows' panels too) and query variables."""
    out = []

    def panels(items: list[dict[str, Any]]) -> None:
        for p in items:
            for t in p.get("targets", []):
                out.append((f"panel {p.get('title')!r} {t.get('refId')}", t["expr"]))
            panels(p.get("panels", []))

    panels(dashboard.get("panels", []))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q)
            assert m, f"variable {var['name']}: only label_values(selector, label) is checked, not {q!r}"
            out.append((f"variable {var['name']}", m.group(1)))
    return out


def is_duration(value: str) -> bool:
    """A Prometheus duration (``15m``, ``1h30m``), as ``for`` and ranges take."""
    if not isinstance(value, str) or not value or not _DURATION.match(value):
        return False
    promql_parser.parse_duration(value)  # raises if the parser disagrees
    return True


def rule_problems(rule_obj: dict[str, Any]) -> list[str]:
    """What is wrong with a PrometheusRule: structure (as prometheus-operator's CRD and
    Prometheus's rule loader want it), PromQL syntax, metrics nobody exports."""
    problems: list[str] = []
    if rule_obj.get("apiVersion") != "monitoring.coreos.com/v1" or rule_obj.get("kind") != "PrometheusRule":
        problems.append("not a monitoring.coreos.com/v1 PrometheusRule")
    groups = (rule_obj.get("spec") or {}).get("groups")
    if not isinstance(groups, list) or not groups:
        return [*problems, "spec.groups is empty"]
    group_names = [g.get("name") for g in groups]
    if len(set(group_names)) != len(group_names) or not all(group_names):
        problems.append(f"group names must be present and unique: {group_names}")
    for g in groups:
        if set(g) - {"name", "interval", "rules", "limit", "partial_response_strategy"}:
            problems.append(f"group {g.get('name')}: unknown keys {sorted(set(g) - {'name', 'interval', 'rules'})}")
        if "interval" in g and not is_duration(g["interval"]):
            problems.append(f"group {g.get('name')}: interval {g['interval']!r} is not a duration")
        for r in g.get("rules") or []:
            where = f"rule {r.get('alert') or r.get('record')}"
            if set(r) - {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}:
                problems.append(f"{where}: unknown keys {sorted(r)}")
            if ("alert" in r) == ("record" in r):
                problems.append(f"{where}: needs exactly one of alert and record")
            if "alert" in r:
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(r["alert"])):
                    problems.append(f"{where}: alert name is not a valid label value for alertname")
                if not (r.get("labels") or {}).get("severity"):
                    problems.append(f"{where}: no severity label")
                ann = r.get("annotations") or {}
                if not ann.get("summary") or not ann.get("description"):
                    problems.append(f"{where}: needs summary and description annotations")
            for key in ("for", "keep_firing_for"):
                if key in r and not is_duration(r[key]):
                    problems.append(f"{where}: {key} {r[key]!r} is not a duration")
            for key, value in {**(r.get("labels") or {}), **(r.get("annotations") or {})}.items():
                if not isinstance(value, str):
                    problems.append(f"{where}: label/annotation {key} is not a string: {value!r}")
            expr = r.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                problems.append(f"{where}: no expr")
                continue
            try:
                unknown = unknown_metrics(expr)
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if unknown:
                problems.append(f"{where}: metrics the operator does not export: {sorted(unknown)}")
    return problems
