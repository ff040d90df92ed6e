"""``lifecycle audit export --bundle`` and ``lifecycle audit verify --bundle``: a range of the
ledger that an auditor checks on their own machine, without the database or the bus; every
change to it is refused, naming the first bad seq.

The ledger: 60 records appended 5 at a time, one append a minute from 09:00 (so records
5i+1..5i+5 are recorded at 09:0i), a checkpoint every 10 records: checkpoints at seq 5 (09:00),
15 (09:02), 25 (09:04), 35 (09:06), 45 (09:08), 55 (09:10) and 60 (09:12, on close).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from audit_helpers import START, make_decision
from click.testing import CliRunner, Result

from core.db import make_engine
from core.settings import load_settings
from lifecycle.cli.audit import EXIT_ERROR, EXIT_TAMPERED, audit
from sinks.canonical import export_hash
from sinks.checkpoints import CheckpointSigner, load_signing_key, public_key_path
from sinks.ledger import SqlAuditSink

CLEAN_ENV = {
    "LIFECYCLE_DB_URL": "",
    "LIFECYCLE_MASTER_KEY_FILE": "",
    "LIFECYCLE_SIGNING_KEY_FILE": "",
}
OFFLINE_ENV = {  # no database and no broker anywhere
    "LIFECYCLE_DB_URL": "postgresql+psycopg://nobody:none@127.0.0.1:9/none",
    "KAFKA_BOOTSTRAP": "127.0.0.1:9",
    "LIFECYCLE_DATA_DIR": "/nonexistent",
}


def at(minutes: float) -> str:
    return (START + timedelta(minutes=minutes)).isoformat()


@dataclass
class Ledger:
    env: dict[str, str]
    public_key: Path
    tmp: Path

    def run(self, *args: str, offline: bool = False) -> Result:
        env = {**self.env, **OFFLINE_ENV} if offline else self.env
        return CliRunner().invoke(audit, list(args), env=env, catch_exceptions=False)

    def export(self, *args: str) -> Path:
        folder = self.tmp / f"bundle-{len(list(self.tmp.glob('bundle-*')))}"
        result = self.run("export", "--bundle", str(folder), *args)
        assert result.exit_code == 0, result.output
        return folder

    def verify(self, folder: Path, *args: str) -> Result:
        return self.run("verify", "--bundle", str(folder), *args, offline=True)


@pytest.fixture
def ledger(db_url: str, tmp_path: Path) -> Ledger:
    env = {**CLEAN_ENV, "LIFECYCLE_DATA_DIR": str(tmp_path / "data"), "LIFECYCLE_DB_URL": db_url}
    settings = load_settings(env)
    minutes = iter(range(1000))

    def clock() -> datetime:
        return START + timedelta(minutes=next(minutes))

    engine = make_engine(settings.db_url)
    signer = load_signing_key(settings.signing_key_file)
    sink = SqlAuditSink(engine, signer, checkpoint_every=10, checkpoint_interval=3600, clock=clock)
    for start in range(1, 61, 5):
        sink.append([make_decision(n) for n in range(start, start + 5)])
    sink.close()
    engine.dispose()
    return Ledger(env, public_key_path(settings.signing_key_file), tmp_path)


@pytest.fixture
def bundle(ledger: Ledger) -> Path:
    """The records written 09:03..09:07: seqs 16..45 (anchored at 15, ending at 45)."""
    return ledger.export("--since", at(3), "--until", at(7))


def records(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]


def write_records(folder: Path, lines: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (folder / "records.jsonl").write_text(text)


def checkpoints(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "checkpoints.jsonl").read_text().splitlines()]


def write_checkpoints(folder: Path, lines: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (folder / "checkpoints.jsonl").write_text(text)


def without(lines: list[dict[str, Any]], seqs: range | list[int]) -> list[dict[str, Any]]:
    return [line for line in lines if line["seq"] not in seqs]


# --------------------------------------------------------------------------- intact bundles


def test_a_bundle_of_a_range_verifies_offline(ledger: Ledger, bundle: Path) -> None:
    assert sorted(p.name for p in bundle.iterdir()) == [
        "checkpoints.jsonl",
        "keys",
        "manifest.json",
        "records.jsonl",
    ]
    assert [r["seq"] for r in records(bundle)] == list(range(16, 46))
    assert [c["seq"] for c in checkpoints(bundle)] == [15, 25, 35, 45]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert (manifest["first_seq"], manifest["last_seq"], manifest["records"]) == (16, 45, 30)

    result = ledger.verify(bundle)
    assert result.exit_code == 0, result.output
    assert "ok: records 16..45 (30), complete from signed 2025-03-01T09:02:00.000Z" in result.output
    assert "4 signed checkpoints (4 with tree heads)" in result.output
    # with the key the auditor holds, instead of the bundle's own
    trusted = ledger.verify(bundle, "--public-key", str(ledger.public_key))
    assert trusted.exit_code == 0, trusted.output


def test_the_whole_ledger_as_a_bundle_verifies_from_the_genesis(ledger: Ledger) -> None:
    folder = ledger.export()
    assert [r["seq"] for r in records(folder)][:1] == [1]
    result = ledger.verify(folder)
    assert result.exit_code == 0, result.output
    assert "records 1..60 (60), complete from the first record" in result.output


def test_a_bundle_is_checked_against_the_range_the_auditor_asks_for(
    ledger: Ledger, bundle: Path
) -> None:
    assert ledger.verify(bundle, "--since", at(2.5), "--until", at(8)).exit_code == 0
    earlier = ledger.verify(bundle, "--since", at(1))
    assert earlier.exit_code == EXIT_TAMPERED
    assert "TAMPERED at seq 16" in earlier.output
    later = ledger.verify(bundle, "--until", at(9))
    assert later.exit_code == EXIT_TAMPERED
    assert "TAMPERED at seq 46" in later.output


def test_something_that_is_not_a_bundle_cannot_be_checked(ledger: Ledger) -> None:
    empty = ledger.tmp / "empty"
    empty.mkdir()
    result = ledger.verify(empty)
    assert result.exit_code == EXIT_ERROR
    assert "is not a bundle" in result.output


def test_export_refuses_a_folder_that_holds_something(ledger: Ledger, bundle: Path) -> None:
    result = ledger.run("export", "--bundle", str(bundle))
    assert result.exit_code == EXIT_ERROR
    assert "is not an empty folder" in result.output


# --------------------------------------------------------------------------- tampering


def change_a_record(folder: Path) -> None:
    lines = records(folder)
    lines[23 - 16]["reason_code"] = "subject_erased"
    write_records(folder, lines)


def change_a_record_and_its_hash(folder: Path) -> None:
    lines = records(folder)
    lines[23 - 16]["purpose"] = "sale"
    lines[23 - 16]["hash"] = export_hash(lines[23 - 16])
    write_records(folder, lines)


def remove_a_record(folder: Path) -> None:
    write_records(folder, without(records(folder), [23]))


def leave_a_hole(folder: Path) -> None:
    write_records(folder, without(records(folder), range(30, 35)))


def forge_a_checkpoint(folder: Path) -> None:
    lines = checkpoints(folder)
    lines[1]["head_hash"] = records(folder)[24 - 16]["hash"]  # seq 25 "signed" at 24's head
    write_checkpoints(folder, lines)


def forge_a_signature(folder: Path) -> None:
    lines = checkpoints(folder)
    signature = lines[2]["signature"]
    lines[2]["signature"] = ("0" if signature[0] != "0" else "1") + signature[1:]
    write_checkpoints(folder, lines)


def cut_the_end(folder: Path) -> None:
    write_records(folder, without(records(folder), range(36, 46)))
    write_checkpoints(folder, without(checkpoints(folder), [45]))


def remove_the_anchor(folder: Path) -> None:
    write_checkpoints(folder, without(checkpoints(folder), [15]))


@pytest.mark.parametrize(
    ("tamper", "first_bad_seq", "says"),
    [
        (change_a_record, 23, "record 23 was altered"),
        (change_a_record_and_its_hash, 23, "record 23 was rewritten"),
        (remove_a_record, 23, "record 23 is missing"),
        (leave_a_hole, 30, "records 30..34 are missing"),
        (forge_a_checkpoint, 25, "checkpoint at seq 25 has an invalid signature"),
        (forge_a_signature, 35, "checkpoint at seq 35 has an invalid signature"),
        (cut_the_end, 36, "records were removed from its end"),
        (remove_the_anchor, 16, "record 16 is not anchored"),
    ],
)
def test_a_tampered_bundle_is_refused_naming_the_first_bad_seq(
    ledger: Ledger,
    bundle: Path,
    tamper: Callable[[Path], None],
    first_bad_seq: int,
    says: str,
) -> None:
    tamper(bundle)
    result = ledger.verify(bundle)
    assert result.exit_code == EXIT_TAMPERED, result.output
    assert f"TAMPERED at seq {first_bad_seq}: " in result.output
    assert says in result.output


def test_a_bundle_cut_short_with_its_manifest_still_fails_the_range_asked_for(
    ledger: Ledger, bundle: Path
) -> None:
    cut_the_end(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.update(last_seq=35, until=None)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert ledger.verify(bundle).exit_code == 0  # now an intact bundle of records 16..35
    result = ledger.verify(bundle, "--until", at(7))
    assert result.exit_code == EXIT_TAMPERED
    assert "TAMPERED at seq 36: " in result.output


def test_a_bundle_re_signed_with_another_key_fails_with_the_ledger_key(
    ledger: Ledger, bundle: Path
) -> None:
    forger = CheckpointSigner.generate()
    lines = records(bundle)
    lines[5]["purpose"] = "sale"  # seq 21: rewrite it and re-chain everything after it
    prev = lines[4]["hash"]
    for line in lines[5:]:
        line["prev_hash"] = prev
        line["hash"] = prev = export_hash(line)
    write_records(bundle, lines)
    heads = {line["seq"]: line["hash"] for line in lines}
    forged = []
    for line in checkpoints(bundle):
        if line["seq"] in heads:
            signed = forger.sign(line["seq"], heads[line["seq"]], START)
            line.update(head_hash=signed.head_hash, signed_at=signed.signed_at)
            line.update(key_id=signed.key_id, signature=signed.signature, tree_root=None)
        forged.append(line)
    write_checkpoints(bundle, forged)
    from cryptography.hazmat.primitives import serialization

    pem = forger.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (bundle / "keys" / f"{forger.key_id}.pub").write_bytes(pem)

    result = ledger.verify(bundle, "--public-key", str(ledger.public_key))
    assert result.exit_code == EXIT_TAMPERED, result.output
    assert "TAMPERED at seq 25: " in result.output
    assert forger.key_id in result.output
