"""Configuration from the environment, read once into a frozen value.

Every setting has a documented environment variable (see README, "Configuration").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from lifecycle.errors import ConfigurationError

_KAFKA_SECURITY_ENV = {
    # environment variable -> librdkafka / Kafka client property
    "KAFKA_SECURITY_PROTOCOL": "security.protocol",
    "KAFKA_SASL_MECHANISM": "sasl.mechanism",
    "KAFKA_SASL_USERNAME": "sasl.username",
    "KAFKA_SASL_PASSWORD": "sasl.password",
    "KAFKA_SSL_CA_LOCATION": "ssl.ca.location",
    "KAFKA_SSL_CERTIFICATE_LOCATION": "ssl.certificate.location",
    "KAFKA_SSL_KEY_LOCATION": "ssl.key.location",
    "KAFKA_SSL_KEY_PASSWORD": "ssl.key.password",
    "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM": "ssl.endpoint.identification.algorithm",
}

SECRET_PROPERTIES = frozenset({"sasl.password", "ssl.key.password"})


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the pipeline reads from its environment."""

    kafka_bootstrap: str | None
    schema_registry_url: str | None
    data_dir: Path
    db_url: str
    master_key_file: Path
    previous_master_key_file: Path | None
    signing_key_file: Path
    policy_dir: Path
    tansu_bin: str | None
    topic_partitions: int
    kafka_security: dict[str, str] = field(default_factory=dict, repr=False)  # holds secrets

    @property
    def embedded(self) -> bool:
        """True when no external cluster is configured: the embedded broker is used."""
        return not self.kafka_bootstrap

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka properties shared by every producer, consumer and admin client."""
        if not self.kafka_bootstrap:
            raise ConfigurationError("KAFKA_BOOTSTRAP is not set and no embedded broker runs")
        return {"bootstrap.servers": self.kafka_bootstrap, **self.kafka_security}

    def with_bootstrap(self, bootstrap: str) -> Settings:
        """A copy pointing at ``bootstrap`` (used once the embedded broker is up)."""
        return _replace(self, kafka_bootstrap=bootstrap)


def _replace(settings: Settings, **changes: object) -> Settings:
    from dataclasses import replace

    return replace(settings, **changes)  # type: ignore[arg-type]


REPO_ROOT = Path(__file__).resolve().parent.parent


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read :class:`Settings` from ``environ`` (default: the process environment)."""
    env = dict(os.environ if environ is None else environ)
    data_dir = Path(env.get("LIFECYCLE_DATA_DIR") or Path.cwd() / "data").resolve()
    db_url = env.get("LIFECYCLE_DB_URL") or f"sqlite:///{data_dir / 'lifecycle.sqlite'}"
    master = Path(env.get("LIFECYCLE_MASTER_KEY_FILE") or data_dir / "master.key")
    signing = Path(env.get("LIFECYCLE_SIGNING_KEY_FILE") or data_dir / "ledger-signing.key")
    policy_dir = Path(env.get("LIFECYCLE_POLICY_DIR") or REPO_ROOT / "policy")
    try:
        partitions = int(env.get("LIFECYCLE_PARTITIONS", "4"))
    except ValueError as exc:
        raise ConfigurationError(
            f"LIFECYCLE_PARTITIONS must be an integer, got {env['LIFECYCLE_PARTITIONS']!r}"
        ) from exc
    security = {prop: env[var] for var, prop in _KAFKA_SECURITY_ENV.items() if env.get(var)}
    return Settings(
        kafka_bootstrap=env.get("KAFKA_BOOTSTRAP") or None,
        schema_registry_url=env.get("SCHEMA_REGISTRY_URL") or None,
        data_dir=data_dir,
        db_url=db_url,
        master_key_file=master,
        previous_master_key_file=(
            Path(env["LIFECYCLE_PREVIOUS_MASTER_KEY_FILE"])
            if env.get("LIFECYCLE_PREVIOUS_MASTER_KEY_FILE")
            else None
        ),
        signing_key_file=signing,
        policy_dir=policy_dir,
        tansu_bin=env.get("TANSU_BIN") or None,
        topic_partitions=partitions,
        kafka_security=security,
    )
