"""The alert rules, checked and unit-tested with Prometheus's own promtool: each alert fires on
series made for it, a healthy pipeline fires none, and every rule queries metrics that exist.

promtool comes with Debian's ``prometheus`` package, which ``.ci/run`` installs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from monitoring import (
    COMPOSE_DIR,
    COMPOSE_RULES,
    KUBE_STATE_METRICS,
    PROMETHEUS_OWN,
    PROMETHEUS_RULE,
    compose_rules,
    exported_metrics,
    kubernetes_rule_groups,
    kubernetes_rules,
    unknown_metrics,
)

RULE_TESTS = Path(__file__).parent / "rules"
COMPOSE_TESTS = RULE_TESTS / "compose.test.yml"
KUBERNETES_TESTS = RULE_TESTS / "kubernetes.test.yml"
ONLY_ON_KUBERNETES = {"LifecycleWorkerUnavailable"}
ONLY_IN_COMPOSE = {"LifecycleWorkerDown"}
READ_DIFFERENTLY = {"LifecycleAuditVerifyFailed", "LifecycleAuditVerifyNotRunning"}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: apt-get install prometheus (.ci/run does)")
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def kubernetes_rules_dir(tmp_path: Path) -> Path:
    """The PrometheusRule's groups as a plain rules file, beside a copy of its unit tests."""
    rules = {"groups": kubernetes_rule_groups()}
    (tmp_path / "kubernetes-rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    shutil.copy(KUBERNETES_TESTS, tmp_path / KUBERNETES_TESTS.name)
    return tmp_path


def test_the_compose_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(COMPOSE_RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_compose_alert_fires_on_its_series_and_none_when_healthy() -> None:
    result = promtool("test", "rules", COMPOSE_TESTS.name, cwd=RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_kubernetes_rules_pass_promtool_check_and_their_tests(
    kubernetes_rules_dir: Path,
) -> None:
    checked = promtool("check", "rules", "kubernetes-rules.yml", cwd=kubernetes_rules_dir)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", KUBERNETES_TESTS.name, cwd=kubernetes_rules_dir)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_fails_a_rule_that_does_not_fire_as_its_test_says(tmp_path: Path) -> None:
    broken = COMPOSE_RULES.read_text().replace(
        "max(lifecycle_ledger_lag_seconds) > 60", "max(lifecycle_ledger_lag_seconds) > 600"
    )
    assert broken != COMPOSE_RULES.read_text()
    (tmp_path / "alerts.yml").write_text(broken)
    tests = yaml.safe_load(COMPOSE_TESTS.read_text())
    tests["rule_files"] = ["alerts.yml"]
    (tmp_path / "compose.test.yml").write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", "compose.test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "LifecycleLedgerLagOverAMinute" in result.stdout + result.stderr


def alert_tests(path: Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load(path.read_text())["tests"])


@pytest.mark.parametrize(
    ("rules", "tests_file"),
    [(compose_rules, COMPOSE_TESTS), (kubernetes_rules, KUBERNETES_TESTS)],
    ids=["compose", "kubernetes"],
)
def test_every_alert_has_a_firing_test_and_the_healthy_run_covers_them_all(
    rules: Any, tests_file: Path
) -> None:
    names = {rule["alert"] for rule in rules()}
    tests = alert_tests(tests_file)
    firing = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    if tests_file == KUBERNETES_TESTS:  # the rules shared with compose fire in its tests
        shared = {rule["alert"] for rule in compose_rules()} & names
        firing |= shared - READ_DIFFERENTLY
    assert names - firing == set(), "alerts no test makes fire"
    (healthy,) = [test for test in tests if test["name"] == "healthy"]
    silent = {case["alertname"] for case in healthy["alert_rule_test"] if case["exp_alerts"] == []}
    assert silent == names


def normalised(rule: dict[str, Any]) -> dict[str, Any]:
    return {**rule, "expr": " ".join(str(rule["expr"]).split())}


def test_the_rules_compose_and_kubernetes_share_are_the_same() -> None:
    compose = {rule["alert"]: normalised(rule) for rule in compose_rules()}
    kubernetes = {rule["alert"]: normalised(rule) for rule in kubernetes_rules()}
    assert set(compose) - ONLY_IN_COMPOSE == set(kubernetes) - ONLY_ON_KUBERNETES
    for name in set(compose) & set(kubernetes) - READ_DIFFERENTLY:
        assert compose[name] == kubernetes[name], name


def test_every_rule_queries_metrics_that_exist() -> None:
    known = exported_metrics() | PROMETHEUS_OWN
    assert unknown_metrics(((r["alert"], r["expr"]) for r in compose_rules()), known) == []
    assert (
        unknown_metrics(
            ((r["alert"], r["expr"]) for r in kubernetes_rules()), known | KUBE_STATE_METRICS
        )
        == []
    )


def test_compose_prometheus_loads_the_rules_and_scrapes_the_verify_result(
    tmp_path: Path,
) -> None:
    compose = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    prometheus = compose["services"]["prometheus"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in prometheus["volumes"]}
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == [mounts["./alerts.yml"]]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["lifecycle-audit-verify"]["static_configs"] == [{"targets": ["node-exporter:9100"]}]
    # promtool checks the whole configuration, with the rules file where compose mounts it
    shutil.copy(COMPOSE_RULES, tmp_path / "alerts.yml")
    config["rule_files"] = [str(tmp_path / "alerts.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_the_scheduled_verify_into_node_exporters_textfile_folder() -> None:
    compose = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    services = compose["services"]
    verify, exporter = services["audit-verify"], services["node-exporter"]
    command = verify["command"]
    assert command[:2] == ["audit", "verify"]
    metrics_file = Path(command[command.index("--metrics-file") + 1])
    assert metrics_file.suffix == ".prom"
    assert "--every" in command
    volume = next(v for v in verify["volumes"] if v.endswith(str(metrics_file.parent)))
    source = volume.split(":")[0]
    textfile = next(v.split(":")[1] for v in exporter["volumes"] if v.startswith(f"{source}:"))
    assert f"--collector.textfile.directory={textfile}" in exporter["command"]
    public_key = command[command.index("--public-key") + 1]
    assert public_key == f"/run/secrets/{verify['secrets'][0]['target']}"
    assert "lifecycle_signing_key" not in {s["source"] for s in verify["secrets"]}


def test_the_kubernetes_rule_is_a_prometheus_operator_resource() -> None:
    document = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert document["apiVersion"] == "monitoring.coreos.com/v1"
    assert document["kind"] == "PrometheusRule"
    assert document["metadata"]["namespace"] == "lifecycle"
    for group in document["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
            assert rule["labels"]["severity"] in {"warning", "critical"}


def test_the_kubernetes_cronjob_verifies_hourly_with_the_public_key_only() -> None:
    path = PROMETHEUS_RULE.parent / "audit-verify-cronjob.yaml"
    cronjob = yaml.safe_load(path.read_text())
    assert cronjob["kind"] == "CronJob"
    assert cronjob["metadata"]["name"] == "lifecycle-audit-verify"  # as the rules name it
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    pod = job["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[:2] == ["audit", "verify"]
    key_path = Path(args[args.index("--public-key") + 1])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(key_path.parent))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert [item["key"] for item in volume["secret"]["items"]] == [key_path.name]
    assert pod["securityContext"]["runAsNonRoot"] is True
