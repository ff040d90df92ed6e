"""``lifecycle audit prove`` and ``lifecycle audit check-receipt``: a receipt proves one record
against a signed tree head with nothing but the public key; any change to it is caught, and
two receipts show whether the ledger's history was kept or rewritten between them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from audit_helpers import erasure_decision, make_decision
from click.testing import CliRunner, Result

from core.db import make_engine
from core.settings import load_settings
from lifecycle.cli.audit import EXIT_ERROR, EXIT_TAMPERED, audit
from sinks.checkpoints import load_signing_key, public_key_path
from sinks.ledger import SqlAuditSink

CLEAN_ENV = {
    "LIFECYCLE_DB_URL": "",
    "LIFECYCLE_MASTER_KEY_FILE": "",
    "LIFECYCLE_SIGNING_KEY_FILE": "",
}


@dataclass
class Ledger:
    env: dict[str, str]
    public_key: Path
    tmp: Path

    def append(self, decisions: list[dict[str, Any]]) -> None:
        settings = load_settings(self.env)
        engine = make_engine(settings.db_url)
        sink = SqlAuditSink(
            engine, load_signing_key(settings.signing_key_file), checkpoint_every=10
        )
        for start in range(0, len(decisions), 5):
            sink.append(decisions[start : start + 5])
        sink.close()
        engine.dispose()

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(audit, list(args), env=self.env, catch_exceptions=False)

    def prove(self, *args: str) -> Path:
        path = self.tmp / f"receipt-{len(list(self.tmp.glob('receipt-*')))}.json"
        result = self.run("prove", *args, "--output", str(path))
        assert result.exit_code == 0, result.output
        return path

    def check(self, path: Path, *args: str) -> Result:
        return self.run("check-receipt", str(path), "--public-key", str(self.public_key), *args)


def open_ledger(db_url: str, tmp_path: Path, name: str) -> Ledger:
    data = tmp_path / name
    env = {**CLEAN_ENV, "LIFECYCLE_DATA_DIR": str(tmp_path / "data"), "LIFECYCLE_DB_URL": db_url}
    settings = load_settings(env)
    load_signing_key(settings.signing_key_file)  # one key, shared by both ledgers of a test
    data.mkdir()
    return Ledger(env, public_key_path(settings.signing_key_file), data)


@pytest.fixture
def ledger(db_url: str, tmp_path: Path) -> Ledger:
    """40 records (the last an erasure), checkpoints with tree heads every 10."""
    opened = open_ledger(db_url, tmp_path, "a")
    opened.append([*(make_decision(n) for n in range(1, 40)), erasure_decision(40)])
    return opened


def edit(path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    receipt = json.loads(path.read_text())
    change(receipt)
    edited = path.with_name(f"edited-{path.name}")
    edited.write_text(json.dumps(receipt))
    return edited


def flip(hex_text: str) -> str:
    return ("0" if hex_text[0] != "0" else "1") + hex_text[1:]


# --------------------------------------------------------------------------- one receipt


def test_a_receipt_verifies_offline_with_only_the_public_key(ledger: Ledger) -> None:
    path = ledger.prove("--seq", "17")
    receipt = json.loads(path.read_text())
    assert receipt["record"]["seq"] == 17
    assert receipt["tree_head"]["tree_size"] == 40
    assert receipt["inclusion"]["leaf_index"] == 16

    result = ledger.check(path)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: record 17 ")


def test_an_erasure_receipt_is_found_by_its_request_id(ledger: Ledger) -> None:
    path = ledger.prove("--request-id", "req-40")
    receipt = json.loads(path.read_text())
    assert receipt["record"]["seq"] == 40
    assert receipt["record"]["erasure"]["request_id"] == "req-40"
    assert ledger.check(path).exit_code == 0

    unknown = ledger.run("prove", "--request-id", "req-nope")
    assert unknown.exit_code == EXIT_ERROR
    assert "no erasure record for request 'req-nope'" in unknown.output


def change_the_record(receipt: dict[str, Any]) -> None:
    receipt["record"]["decision"] = "deny" if receipt["record"]["decision"] == "allow" else "allow"


def change_the_record_and_its_hash(receipt: dict[str, Any]) -> None:
    change_the_record(receipt)
    from sinks.canonical import export_hash

    receipt["record"]["hash"] = export_hash(receipt["record"])


def change_a_proof_node(receipt: dict[str, Any]) -> None:
    receipt["inclusion"]["path"][1] = flip(receipt["inclusion"]["path"][1])


def drop_a_proof_node(receipt: dict[str, Any]) -> None:
    receipt["inclusion"]["path"].pop()


def change_the_tree_root(receipt: dict[str, Any]) -> None:
    receipt["tree_head"]["root"] = flip(receipt["tree_head"]["root"])


def change_the_tree_size(receipt: dict[str, Any]) -> None:
    receipt["tree_head"]["tree_size"] = 41
    receipt["tree_head"]["checkpoint"]["seq"] = 41


def change_the_signature(receipt: dict[str, Any]) -> None:
    signed = receipt["tree_head"]["checkpoint"]
    signed["signature"] = flip(signed["signature"])


def point_at_another_leaf(receipt: dict[str, Any]) -> None:
    receipt["inclusion"]["leaf_index"] = 17


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        (change_the_record, "record 17 was changed"),
        (change_the_record_and_its_hash, "not proven in the signed tree"),
        (change_a_proof_node, "not proven in the signed tree"),
        (drop_a_proof_node, "not proven in the signed tree"),
        (change_the_tree_root, "signature does not hold"),
        (change_the_tree_size, "signature does not hold"),
        (change_the_signature, "signature does not hold"),
        (point_at_another_leaf, "not record 17"),
    ],
)
def test_a_changed_receipt_fails(
    ledger: Ledger, tamper: Callable[[dict[str, Any]], None], says: str
) -> None:
    path = edit(ledger.prove("--seq", "17"), tamper)
    result = ledger.check(path)
    assert result.exit_code == EXIT_TAMPERED, result.output
    assert says in result.output


def test_a_receipt_checked_with_another_key_fails(ledger: Ledger, tmp_path: Path) -> None:
    other = load_signing_key(tmp_path / "other.key")
    path = ledger.prove("--seq", "3")
    result = ledger.run(
        "check-receipt", str(path), "--public-key", str(public_key_path(tmp_path / "other.key"))
    )
    assert result.exit_code == EXIT_TAMPERED
    assert "not one of the given public keys" in result.output
    assert other.key_id in result.output


def test_a_garbled_receipt_cannot_be_checked(ledger: Ledger) -> None:
    path = ledger.tmp / "garbled.json"
    path.write_text("{not json")
    result = ledger.check(path)
    assert result.exit_code == EXIT_ERROR
    assert "is not a readable receipt" in result.output


def test_a_record_not_yet_under_a_signed_tree_head_gets_no_receipt(ledger: Ledger) -> None:
    settings = load_settings(ledger.env)
    engine = make_engine(settings.db_url)
    sink = SqlAuditSink(engine, load_signing_key(settings.signing_key_file), checkpoint_every=50)
    sink.append([make_decision(n) for n in range(41, 44)])  # not due: left unsigned
    engine.dispose()
    result = ledger.run("prove", "--seq", "42")
    assert result.exit_code == EXIT_ERROR
    assert "record 42 is not yet covered by a signed tree head" in result.output
    assert ledger.run("prove", "--seq", "99").exit_code == EXIT_ERROR


# --------------------------------------------------------------------------- two receipts


def test_a_growing_ledger_stays_consistent_with_an_older_receipt(ledger: Ledger) -> None:
    older = ledger.prove("--seq", "40")
    ledger.append([make_decision(n) for n in range(41, 66)])
    newer = ledger.prove("--seq", "5", "--consistent-with", str(older))
    assert json.loads(newer.read_text())["tree_head"]["tree_size"] == 65

    for first, second in ((newer, older), (older, newer)):
        result = ledger.check(first, "--consistent-with", str(second))
        assert result.exit_code == 0, result.output
        assert "consistent: the tree of 40 records is a prefix of the tree of 65" in result.output


def test_two_receipts_without_a_consistency_proof_are_undecided(ledger: Ledger) -> None:
    older = ledger.prove("--seq", "40")
    ledger.append([make_decision(n) for n in range(41, 66)])
    newer = ledger.prove("--seq", "5")
    result = ledger.check(newer, "--consistent-with", str(older))
    assert result.exit_code == EXIT_ERROR
    assert "carries no consistency proof from tree size 40" in result.output


def test_a_rewritten_history_is_caught_by_the_prover_and_by_the_checker(
    ledger: Ledger, another_db_url: str, tmp_path: Path
) -> None:
    older = ledger.prove("--seq", "40")
    # Someone holding the signing key rebuilds the ledger with record 3 changed, and goes on.
    rewritten = open_ledger(another_db_url, tmp_path, "b")
    decisions = [make_decision(n) for n in range(1, 40)]
    decisions[2] = make_decision(3, decision="deny", reason_code="purpose_not_permitted")
    rewritten.append([*decisions, erasure_decision(40)])
    own_older = rewritten.prove("--seq", "40")  # the rewritten ledger's own head at 40
    rewritten.append([make_decision(n) for n in range(41, 66)])

    refused = rewritten.run("prove", "--seq", "5", "--consistent-with", str(older))
    assert refused.exit_code == EXIT_TAMPERED
    assert "history was rewritten" in refused.output

    newer = rewritten.prove("--seq", "5", "--consistent-with", str(own_older))
    assert rewritten.check(newer, "--consistent-with", str(own_older)).exit_code == 0
    result = ledger.check(newer, "--consistent-with", str(older))
    assert result.exit_code == EXIT_TAMPERED, result.output
    assert "INCONSISTENT" in result.output

    # nor does claiming the honest old root in the proof help
    def claim_the_old_root(receipt: dict[str, Any]) -> None:
        receipt["consistency"][0]["from_root"] = json.loads(older.read_text())["tree_head"]["root"]

    forged = edit(newer, claim_the_old_root)
    forged_result = ledger.check(forged, "--consistent-with", str(older))
    assert forged_result.exit_code == EXIT_TAMPERED
    assert "INCONSISTENT" in forged_result.output
