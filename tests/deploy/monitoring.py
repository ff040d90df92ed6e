"""What the monitoring files query, and what the pipeline exports: metric names on both sides.

The exported names come from the code itself: the worker's :class:`Metrics` registry (with its
health gauges) and the registry ``audit verify --metrics-file`` writes, so renaming a metric
there makes the dashboard and alert checks fail until the files follow.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from prometheus_client import CollectorRegistry

from lifecycle.observability import Health
from lifecycle.verify_metrics import VerifyOutcome, verify_registry
from processors.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
DASHBOARD = COMPOSE_DIR / "grafana" / "dashboards" / "lifecycle.json"
COMPOSE_RULES = COMPOSE_DIR / "alerts.yml"
PROMETHEUS_RULE = ROOT / "deploy" / "kubernetes" / "prometheusrule.yaml"

PROMETHEUS_OWN = frozenset({"up"})
"""Series Prometheus makes itself for every target."""
KUBE_STATE_METRICS = frozenset(
    {
        "kube_deployment_status_replicas_unavailable",
        "kube_job_status_failed",
        "kube_job_status_start_time",
        "kube_cronjob_status_last_successful_time",
    }
)
"""kube-state-metrics series the PrometheusRule reads (Kubernetes objects' status)."""

GRAFANA_INTERVALS = ("$__rate_interval", "$__interval", "$__range")

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "unknown": ("",),
}


def sample_names(registry: CollectorRegistry) -> set[str]:
    """Every series name ``registry`` exports, labelled families without children included."""
    names = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def exported_metrics() -> frozenset[str]:
    """The names a worker's /metrics and the verifier's .prom file hold."""
    worker = Metrics(health=Health())
    verify = verify_registry(VerifyOutcome(True, False, 1, 1, None, 0.1, 0.0))
    return frozenset(sample_names(worker.registry) | sample_names(verify))


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana's interval variables allowed)."""
    for variable in GRAFANA_INTERVALS:
        expr = expr.replace(variable, "5m")
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name
            if name is None:  # {__name__="..."}
                name = next((m.value for m in node.matchers.matchers if m.name == "__name__"), None)
            if name is not None:
                names.add(name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def dashboard_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # inside collapsed rows


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel."""
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text())


def compose_rules() -> list[dict[str, Any]]:
    return [
        rule
        for group in yaml.safe_load(COMPOSE_RULES.read_text())["groups"]
        for rule in group["rules"]
    ]


def kubernetes_rule_groups() -> list[dict[str, Any]]:
    return list(yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]["groups"])


def kubernetes_rules() -> list[dict[str, Any]]:
    return [rule for group in kubernetes_rule_groups() for rule in group["rules"]]


def unknown_metrics(
    queries: Iterable[tuple[str, str]], known: frozenset[str]
) -> list[tuple[str, str]]:
    """(where, metric) for every queried metric not in ``known``."""
    return sorted(
        (where, name) for where, expr in queries for name in metric_names(expr) if name not in known
    )
