"""Purpose limits on the running pipeline: every event gets the policy's decision."""

from __future__ import annotations

import signal

from streams.codec import SingleObjectCodec
from streams.topics import VIOLATIONS

from fixtures.broker import Workers, audit_records, read_topic, run_cli
from integration.scenario import CARD_NUMBER, EXPECTED, EXPECTED_VERSION, SCENARIO, lines
from integration.test_bus import all_bytes_on_the_bus

CODEC = SingleObjectCodec()


def decisions_of(bootstrap: str, count: int) -> dict[str, dict]:
    return {
        r["decision"]["event_id"]: r["decision"] for r in audit_records(bootstrap, CODEC, count)
    }


def test_every_event_gets_the_decision_and_reason_code_the_policy_gives(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    workers.start()
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines()).returncode == 0

    decided = decisions_of(broker, len(SCENARIO))

    assert {e: (d["decision"], d["reason_code"]) for e, d in decided.items()} == EXPECTED
    for event_id, version in EXPECTED_VERSION.items():
        assert decided[event_id]["policy_version"] == version
    assert decided["s17"]["policy_version"] == "2026-01-01"
    assert all(d["rule"] for d in decided.values())
    refused = {e for e, (verdict, _) in EXPECTED.items() if verdict == "deny"}
    violations = read_topic(broker, VIOLATIONS, min_count=len(refused))
    assert {
        CODEC.decode("lifecycle.Decision", m.value())["event_id"] for m in violations
    } == refused


def test_card_data_via_online_tendering_is_refused_and_never_written(
    workers: Workers, lifecycle_env: dict[str, str], broker: str, tmp_path
) -> None:
    workers.start()
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines()).returncode == 0
    decided = decisions_of(broker, len(SCENARIO))
    assert decided["s13"]["reason_code"] == "prohibited_collection"

    card = CARD_NUMBER.encode()
    assert [t for t, data in all_bytes_on_the_bus(broker) if card in data] == []
    databases = b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file())
    assert card not in databases


def test_a_worker_killed_mid_sequence_and_restarted_changes_no_decision(
    workers: Workers, lifecycle_env: dict[str, str], broker: str
) -> None:
    events = [e for e, _ in SCENARIO]
    first = workers.start()
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines(events[:9])).returncode == 0
    decisions_of(broker, 9)
    first.stop(signal.SIGKILL)

    workers.start()
    assert run_cli(lifecycle_env, "publish", "-", stdin=lines(events[9:])).returncode == 0
    decided = decisions_of(broker, len(SCENARIO))

    assert {e: (d["decision"], d["reason_code"]) for e, d in decided.items()} == EXPECTED
