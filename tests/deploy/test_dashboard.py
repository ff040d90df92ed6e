"""The Grafana dashboard of the compose stack: provisioned beside Prometheus, and querying only
metrics the workers (and the scheduled audit verify) export."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from monitoring import (
    COMPOSE_DIR,
    PROMETHEUS_OWN,
    dashboard_panels,
    dashboard_queries,
    exported_metrics,
    load_dashboard,
    metric_names,
    unknown_metrics,
)

COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
PROVISIONING = COMPOSE_DIR / "grafana" / "provisioning"

WHAT_AN_OPERATOR_WATCHES = {
    "decisions and denials by reason": "lifecycle_decisions_total",
    "consumer lag": "lifecycle_consumer_lag",
    "ledger lag": "lifecycle_ledger_lag_seconds",
    "erasure latency": "lifecycle_erasure_latency_seconds_bucket",
    "dead letters": "lifecycle_dead_letters_total",
    "worker readiness": "lifecycle_ready",
    "last audit verify": "lifecycle_audit_verify_ok",
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


def test_every_dashboard_query_names_a_metric_the_pipeline_exports(
    dashboard: dict[str, Any],
) -> None:
    assert unknown_metrics(dashboard_queries(dashboard), exported_metrics() | PROMETHEUS_OWN) == []


def test_a_panel_querying_a_metric_that_no_longer_exists_is_caught(
    dashboard: dict[str, Any],
) -> None:
    renamed = copy.deepcopy(dashboard)
    for panel in dashboard_panels(renamed):
        for target in panel.get("targets", []):
            target["expr"] = target["expr"].replace(
                "lifecycle_consumer_lag", "lifecycle_consumer_lag_records"
            )
    unknown = unknown_metrics(dashboard_queries(renamed), exported_metrics() | PROMETHEUS_OWN)
    assert unknown == [("Consumer lag by topic", "lifecycle_consumer_lag_records")]


def test_the_dashboard_shows_what_an_operator_watches(dashboard: dict[str, Any]) -> None:
    queried = {name for _, expr in dashboard_queries(dashboard) for name in metric_names(expr)}
    missing = {what for what, metric in WHAT_AN_OPERATOR_WATCHES.items() if metric not in queried}
    assert missing == set()
    exprs = [expr for _, expr in dashboard_queries(dashboard)]
    assert any("histogram_quantile(0.5," in e for e in exprs)
    assert any("histogram_quantile(0.99," in e for e in exprs)
    assert any('decision="deny"' in e and "reason_code" in e for e in exprs)


def test_the_dashboard_is_well_formed(dashboard: dict[str, Any]) -> None:
    panels = list(dashboard_panels(dashboard))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "prometheus"}
    assert dashboard["uid"] == "lifecycle"


def test_grafana_is_provisioned_with_the_dashboard_and_the_stacks_prometheus() -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    grafana = compose["services"]["grafana"]
    mounts = {volume.split(":")[0]: volume.split(":")[1] for volume in grafana["volumes"]}
    for source in mounts:
        if source.startswith("./"):
            assert (COMPOSE_DIR / source).is_dir(), source
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["uid"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "lifecycle.yaml").read_text())
    (provider,) = providers["providers"]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
