"""A key store restored from a backup must not bring erased data back, and the restored
ledger is brought forward from ``privacy.audit``.

A backup taken before an erasure still holds the erased customer's wrapped keys; restored as
it is, every copy of the erased values on the topics decrypts again. ``lifecycle keys
reshred`` replays ``privacy.key-revocations`` (kept forever) and destroys those keys again,
sparing keys created after each revocation (a later collection), so it is safe to run on any
restored store, however old, and to repeat.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from streams.codec import SingleObjectCodec

from fixtures.broker import Workers, audit_records, run_cli
from integration.scenario import PERSONAL, event, lines
from integration.test_erasure import SUBJECT, erase, keystore_of, readable_values

CODEC = SingleObjectCodec()


def collect(event_id: str, minute: int, name: str) -> bytes:
    return lines(
        [
            event(
                "collected",
                event_id,
                minute,
                "system",
                channel="web_form",
                purposes=["billing"],
                data={"name": name, "email": PERSONAL["email"]},
            )
        ]
    )


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (its online backup API)."""
    with sqlite3.connect(source) as live, sqlite3.connect(target) as copy:
        live.backup(copy)
    live.close()
    copy.close()


def test_reshred_after_a_restore_destroys_erased_keys_again_and_spares_later_ones(
    workers: Workers, lifecycle_env: dict[str, str], broker: str, tmp_path: Path
) -> None:
    database = Path(lifecycle_env["LIFECYCLE_DATA_DIR"]) / "lifecycle.sqlite"
    backup = tmp_path / "before-erasure.sqlite"
    worker = workers.start()
    first = collect("r1", 0, "Old Name")
    assert run_cli(lifecycle_env, "publish", "-", stdin=first).returncode == 0
    audit_records(broker, CODEC, 1)
    copy_database(database, backup)  # the nightly backup, before the customer's erasure

    assert erase(lifecycle_env)["status"] == "completed"
    renewed = collect("r2", 30, "New Name")  # a later collection: new keys
    assert run_cli(lifecycle_env, "publish", "-", stdin=renewed).returncode == 0
    audit_records(broker, CODEC, 3)
    worker.process.terminate()
    assert worker.process.wait(60) == 0
    ref = keystore_of(lifecycle_env).subject_ref(SUBJECT)
    assert readable_values(broker, lifecycle_env, ref)["name"] == {"New Name"}

    # On the store as it is (or restored from a backup newer than both events), replaying
    # the revocation must leave the later collection's keys alone.
    kept = run_cli(lifecycle_env, "keys", "reshred")
    assert kept.returncode == 0, kept.stderr.decode()
    assert "0 categories' keys destroyed again" in kept.stderr.decode()
    assert readable_values(broker, lifecycle_env, ref)["name"] == {"New Name"}

    # Restored from the backup before the erasure: the erased value decrypts again ...
    for current in database.parent.glob("lifecycle.sqlite*"):  # with its -wal and -shm
        current.unlink()
    shutil.copyfile(backup, database)
    assert "Old Name" in readable_values(broker, lifecycle_env, ref)["name"]

    # ... until the revocations are replayed, as the restore procedure says, before any
    # worker or publisher starts.
    reshred = run_cli(lifecycle_env, "keys", "reshred")
    assert reshred.returncode == 0, reshred.stderr.decode()
    assert "0 categories' keys destroyed again" not in reshred.stderr.decode()
    readable = readable_values(broker, lifecycle_env, ref)
    assert "Old Name" not in readable.get("name", set())
    assert PERSONAL["email"] not in readable.get("email", set())
    again = run_cli(lifecycle_env, "keys", "reshred")
    assert "0 categories' keys destroyed again" in again.stderr.decode()

    # The restored ledger lacks the erasure's and the later collection's records: they are
    # brought back from privacy.audit, and the ledger verifies with all three.
    recovered = run_cli(lifecycle_env, "audit", "recover")
    assert recovered.returncode == 0, recovered.stderr.decode()
    assert "added 2 records" in recovered.stderr.decode()
    verified = run_cli(lifecycle_env, "audit", "verify")
    assert verified.returncode == 0, (verified.stdout + verified.stderr).decode()
    exported = run_cli(lifecycle_env, "audit", "export")
    kinds = [json.loads(line)["kind"] for line in exported.stdout.splitlines()]
    assert kinds == ["collected", "deletion_requested", "collected"]
