"""Creating the contract's topics on any cluster, and bringing existing ones to their settings
(``lifecycle topics apply``): idempotent, and refusing what cannot be made right in place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import KafkaError
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from streams import clients
from streams.exceptions import BrokerError
from streams.topics import TOPICS, TopicSpec, topic_config


class TopicsMismatchError(BrokerError):
    """Existing topics differ from the contract in ways ``apply_topics`` must not (or could
    not) fix; ``outcome`` says what was done to every topic before that."""

    def __init__(self, problems: list[str], outcome: dict[str, str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.outcome = outcome


def apply_topics(
    client_config: Mapping[str, str],
    partitions: int,
    replication: int | None = None,
    timeout: float = 30.0,
    *,
    grow_partitions: bool = False,
) -> dict[str, str]:
    """Create missing topics and bring existing ones to the contract's settings; returns
    name -> what was done ("created", "unchanged", "set retention.ms=-1 (was 86400000)", ...).

    ``replication`` None lets the broker choose (its ``default.replication.factor``).
    Existing topics: each setting the contract fixes is described and, where it differs,
    altered in place (incremental alter configs). A partitioned topic with fewer partitions
    than ``partitions`` grows only with ``grow_partitions`` (it moves subjects to other
    partitions: stop the workers first). Raises :class:`TopicsMismatchError`, after treating
    every topic, for what cannot be made right here: more partitions than configured (Kafka
    cannot remove any), another replication factor, or an operation the broker refused."""
    admin = clients.admin(client_config)
    specs = {spec.name: spec for spec in TOPICS}
    wanted = {name: partitions if spec.partitioned else 1 for name, spec in specs.items()}
    outcome: dict[str, str] = {}
    problems: list[str] = []
    existing = set(admin.list_topics(timeout=timeout).topics)
    new = [
        NewTopic(
            name,
            num_partitions=wanted[name],
            replication_factor=-1 if replication is None else replication,
            config=topic_config(spec, replication),
        )
        for name, spec in specs.items()
        if name not in existing
    ]
    for name, future in (admin.create_topics(new, request_timeout=timeout) if new else {}).items():
        try:
            future.result(timeout=timeout)
            outcome[name] = f"created ({wanted[name]} partitions)"
        except Exception as exc:
            if _already_exists(exc):
                existing.add(name)  # created meanwhile: check it like the others
            else:
                raise BrokerError(f"could not create topic {name}: {exc}") from exc
    to_check = [name for name in specs if name in existing]
    if to_check:
        metadata = admin.list_topics(timeout=timeout).topics
        current = _describe(admin, to_check, timeout)
        for name in to_check:
            check = _TopicCheck()
            partitions_now = len(metadata[name].partitions)
            _fix_partitions(
                admin, check, specs[name], partitions_now, wanted[name], grow_partitions, timeout
            )
            _fix_config(
                admin, check, name, topic_config(specs[name], replication), current[name], timeout
            )
            replicas = {len(p.replicas) for p in metadata[name].partitions.values()}
            if replication is not None and replicas != {replication}:
                check.problems.append(
                    f"replication factor {'/'.join(map(str, sorted(replicas)))}, "
                    f"{replication} requested (change it with a partition reassignment)"
                )
            problems += [f"{name}: {problem}" for problem in check.problems]
            outcome[name] = ", ".join(check.done + check.problems) or "unchanged"
    ordered = {name: outcome[name] for name in specs}
    if problems:
        raise TopicsMismatchError(problems, ordered)
    return ordered


def ensure_topic(client_config: Mapping[str, str], name: str, timeout: float = 30.0) -> None:
    """Create the one-partition topic ``name`` with the contract's settings unless it exists.

    For a process that writes to it before ``lifecycle topics apply`` ran (a publisher racing
    the first worker): the broker would otherwise create it on the first write with its
    default partition count, which a one-partition topic must not have."""
    spec = next(spec for spec in TOPICS if spec.name == name)
    if spec.partitioned:
        raise ValueError(f"{name} is partitioned: its partition count is a setting")
    admin = clients.admin(client_config)
    if name in admin.list_topics(timeout=timeout).topics:
        return
    new = NewTopic(name, num_partitions=1, config=topic_config(spec, None))
    try:
        admin.create_topics([new], request_timeout=timeout)[name].result(timeout=timeout)
    except Exception as exc:
        if not _already_exists(exc):
            raise BrokerError(f"could not create topic {name}: {exc}") from exc


def _already_exists(exc: BaseException) -> bool:
    """Whether a topic creation failed only because the topic exists (created meanwhile)."""
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS


@dataclass(slots=True)
class _TopicCheck:
    done: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _describe(admin: AdminClient, names: list[str], timeout: float) -> dict[str, dict[str, str]]:
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    out: dict[str, dict[str, str]] = {}
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        try:
            entries = future.result(timeout=timeout)
        except Exception as exc:
            raise BrokerError(
                f"could not describe the configs of topic {resource.name}: {exc}"
            ) from exc
        out[resource.name] = {key: entry.value for key, entry in entries.items()}
    return out


def _fix_config(
    admin: AdminClient,
    check: _TopicCheck,
    name: str,
    wanted: dict[str, str],
    current: dict[str, str],
    timeout: float,
) -> None:
    differing = {key: value for key, value in wanted.items() if current.get(key) != value}
    if not differing:
        return
    resource = ConfigResource(
        ResourceType.TOPIC,
        name,
        incremental_configs=[
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
            for key, value in differing.items()
        ],
    )
    settings = ", ".join(
        f"{key}={value} (was {current.get(key, 'unset')})" for key, value in differing.items()
    )
    try:
        for future in admin.incremental_alter_configs([resource], request_timeout=timeout).values():
            future.result(timeout=timeout)
    except Exception as exc:
        check.problems.append(f"the broker refused to set {settings}: {_reason(exc)}")
    else:
        check.done.append(f"set {settings}")


def _fix_partitions(
    admin: AdminClient,
    check: _TopicCheck,
    spec: TopicSpec,
    have: int,
    wanted: int,
    grow: bool,
    timeout: float,
) -> None:
    if have == wanted:
        return
    if not spec.partitioned:
        check.problems.append(
            f"{have} partitions, it must have 1 (its readers rely on one total order); recreate it"
        )
    elif have > wanted:
        check.problems.append(
            f"{have} partitions, {wanted} configured (Kafka cannot remove partitions; "
            f"set LIFECYCLE_PARTITIONS={have} or --partitions {have})"
        )
    elif not grow:
        check.problems.append(
            f"{have} partitions, {wanted} configured (growing moves subjects to other "
            "partitions: stop the workers, then run `lifecycle topics apply --grow-partitions`)"
        )
    else:
        try:
            for future in admin.create_partitions(
                [NewPartitions(spec.name, wanted)], request_timeout=timeout
            ).values():
                future.result(timeout=timeout)
        except Exception as exc:
            check.problems.append(
                f"the broker refused to grow it from {have} to {wanted} partitions: {_reason(exc)}"
            )
        else:
            check.done.append(f"partitions {have} -> {wanted}")


def _reason(exc: BaseException) -> str:
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError):
        return f"{error.name()}: {error.str()}"
    return f"{type(exc).__name__}: {exc}"
