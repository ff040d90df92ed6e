"""Configuration from the environment, read once into a frozen value.

Every setting has a documented environment variable (see docs/).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ConfigurationError

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

KEY_CACHE = 1_000_000
FETCH_WAIT_MS = 50
"""How long a fetch of the pipeline's consumers may wait for records (``fetch.wait.max.ms``
of the librdkafka ones; Faust's, fixed at 1,500 ms, is set to it too: streams/app.py).
Apache Kafka answers a waiting fetch as soon as a record arrives, so any value works there;
the embedded broker answers only when the wait runs out, so a record produced to an idle
partition waits about that long before a consumer sees it, and every stage of the pipeline is
one such wait."""


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
    topic_partitions: int
    kafka_security: dict[str, str] = field(default_factory=dict, repr=False)  # holds secrets
    fetch_wait_ms: int = FETCH_WAIT_MS
    key_cache: int = KEY_CACHE
    """Customers whose unwrapped data keys a process keeps (streams/keys/cache.py)."""
    key_cache_warm: bool = False
    """Fill the key cache from the key store in the background at start."""
    publish_timeout_ms: int = 120_000
    """How long ``lifecycle publish`` waits for the broker to acknowledge a record."""
    replication: int | None = None
    """Replication factor of the topics the pipeline creates (``LIFECYCLE_REPLICATION``);
    None: the broker's ``default.replication.factor``."""
    event_loop: str = "uvloop"
    """The workers' event loop (``LIFECYCLE_EVENT_LOOP``): ``uvloop`` or ``asyncio``."""
    auth_mode: str = "enforce"
    """``LIFECYCLE_AUTH_MODE``: ``enforce`` refuses events no registered source vouches for;
    ``permit`` lets events without a MAC through, counted (a rollout)."""
    source_secret_file: Path | None = None
    """``LIFECYCLE_SOURCE_SECRET_FILE``: the publisher's source secret tokens, one a line."""

    @property
    def embedded(self) -> bool:
        """True when no external cluster is configured: the embedded broker is used."""
        return not self.kafka_bootstrap

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka properties shared by every producer, consumer and admin client."""
        if not self.kafka_bootstrap:
            raise ConfigurationError("KAFKA_BOOTSTRAP is not set and no embedded broker runs")
        return {"bootstrap.servers": self.kafka_bootstrap, **self.kafka_security}

    def kafka_consumer_config(self) -> dict[str, str]:
        """:meth:`kafka_client_config` plus the consumers' fetch wait (``fetch_wait_ms``)."""
        return {**self.kafka_client_config(), "fetch.wait.max.ms": str(self.fetch_wait_ms)}

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
    return Settings(
        kafka_bootstrap=env.get("KAFKA_BOOTSTRAP") or None,
        schema_registry_url=env.get("SCHEMA_REGISTRY_URL") or None,
        data_dir=data_dir,
        db_url=db_url,
        master_key_file=master,
        previous_master_key_file=_optional_path(env, "LIFECYCLE_PREVIOUS_MASTER_KEY_FILE"),
        signing_key_file=signing,
        policy_dir=policy_dir,
        topic_partitions=_whole_number(env, "LIFECYCLE_PARTITIONS", 4, least=1),
        fetch_wait_ms=_whole_number(env, "LIFECYCLE_FETCH_WAIT_MS", FETCH_WAIT_MS, least=0),
        key_cache=_whole_number(env, "LIFECYCLE_KEY_CACHE", KEY_CACHE, least=1),
        key_cache_warm=switch(env, "LIFECYCLE_KEY_CACHE_WARM"),
        publish_timeout_ms=_whole_number(env, "LIFECYCLE_PUBLISH_TIMEOUT_MS", 120_000, least=1),
        replication=_whole_number(env, "LIFECYCLE_REPLICATION", 0, least=1) or None,
        event_loop=_choice(env, "LIFECYCLE_EVENT_LOOP", EVENT_LOOPS),
        kafka_security={
            prop: env[var] for var, prop in _KAFKA_SECURITY_ENV.items() if env.get(var)
        },
        auth_mode=_choice(env, "LIFECYCLE_AUTH_MODE", AUTH_MODES),
        source_secret_file=_optional_path(env, "LIFECYCLE_SOURCE_SECRET_FILE"),
    )


EVENT_LOOPS = ("uvloop", "asyncio")
"""The event loops a worker can run on; the first is the default."""
AUTH_MODES = ("enforce", "permit")
"""How workers treat events without a source MAC; the first is the default."""


def _choice(env: dict[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return choices[0]
    if raw not in choices:
        raise ConfigurationError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _optional_path(env: dict[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return Path(raw) if raw else None


def switch(env: dict[str, str], name: str) -> bool:
    """A 1/0 (true/false, yes/no, on/off) setting; unset is off."""
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigurationError(f"{name} must be 1 or 0 (true or false), got {raw!r}")


def _whole_number(env: dict[str, str], name: str, default: int, *, least: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from exc
    if value < least:
        raise ConfigurationError(f"{name} must be at least {least}, got {value}")
    return value
