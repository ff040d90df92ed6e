"""Offline evidence: a bundle is a folder holding a range of the ledger with everything needed
to check it without the database or the bus (``lifecycle audit export --bundle`` and
``lifecycle audit verify --bundle``).

Files::

    manifest.json      what the bundle covers (see below) and how to check it
    records.jsonl      the records, in seq order, as ``audit export`` writes them
    checkpoints.jsonl  the signed checkpoints from the anchor to the last record, one a line
    keys/<key_id>.pub  the Ed25519 public keys (PEM) those checkpoints name

The range is chosen by when records were written (``recorded_at``) and widened to signed
checkpoints at both ends, so that it is provably complete: it starts after the *anchor*, the
last checkpoint signed before ``since`` (or at the first record), and ends at the first
checkpoint signed at or after ``until`` (or the newest one). The first record's ``prev_hash``
is the anchor's signed head; every record links to the one before; the last record is a
signed head. Nothing can be removed, added or changed between two signed heads without
breaking a hash or a signature, and a record written in ``[since, until)`` cannot lie outside
the two anchors (up to the skew between the workers' clocks, which stamp both).

The anchor's line also carries the Merkle tree frontier at its seq (its root is the anchor's
signed tree root), from which every tree head in the bundle is recomputed.

Verification checks: every checkpoint signature, the anchor, every record's hash and link,
every signed head and tree root, that the records end exactly at the last checkpoint, and that
the signed times cover the range asked (``--since``/``--until``, else the manifest's). It
names the first bad seq.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine, inspect, select
from sqlalchemy.exc import SQLAlchemyError

from sinks.canonical import GENESIS_HASH, export_hash
from sinks.chain import ChainChecker
from sinks.checkpoints import Checkpoint, checkpoint_problem, key_id_of, load_public_key
from sinks.entry import AuditEntry
from sinks.exceptions import LedgerError, SigningKeyError
from sinks.ledger import (
    audit_checkpoints,
    audit_ledger,
    read_checkpoints,
    reading,
    require_ledger,
)
from sinks.ledger.tables import checkpoint_of, ledger_error
from sinks.merkle import Frontier, record_leaf
from sinks.stored import utc_text

BUNDLE_FORMAT = "lifecycle.audit.bundle.v1"
MANIFEST = "manifest.json"
RECORDS = "records.jsonl"
CHECKPOINTS = "checkpoints.jsonl"
KEYS = "keys"


class BundleError(LedgerError):
    """A bundle cannot be written, or is not a bundle that can be checked (names why)."""


@dataclass(frozen=True, slots=True)
class BundleSummary:
    """What ``export_bundle`` wrote."""

    directory: Path
    first_seq: int
    last_seq: int
    records: int
    checkpoints: int
    covered_from: str | None  # the anchor's signed_at (None: from the first record)
    covered_until: str  # the last checkpoint's signed_at
    short_of_until: bool  # the newest checkpoint was signed before ``until``


# --------------------------------------------------------------------------- export


def export_bundle(
    engine: Engine,
    directory: Path,
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    created_at: datetime | None = None,
) -> BundleSummary:
    """Write the bundle of records written in ``[since, until)`` into ``directory`` (which
    must be missing or empty). ``public_keys`` (key id -> key) must hold the key of every
    checkpoint in the range."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise BundleError(f"{directory} exists and is not an empty folder")
    try:
        with reading(engine) as conn:
            require_ledger(conn)
            return _export(conn, directory, public_keys, since, until, created_at)
    except SQLAlchemyError as exc:
        raise ledger_error(exc, "read") from exc


def _export(
    conn: Connection,
    directory: Path,
    public_keys: Mapping[str, Ed25519PublicKey],
    since: datetime | None,
    until: datetime | None,
    created_at: datetime | None,
) -> BundleSummary:
    signed = read_checkpoints(conn)
    if not signed:
        raise BundleError("the ledger has no signed checkpoint yet: nothing can be proven")
    ordered = sorted(signed.values(), key=lambda c: c.seq)
    anchor: Checkpoint | None = None
    if since is not None:
        since_text = utc_text(since)
        before = [c for c in ordered if c.signed_at < since_text]
        anchor = before[-1] if before else None
    last = ordered[-1]
    if until is not None:
        until_text = utc_text(until)
        after = [c for c in ordered if c.signed_at >= until_text]
        if after:
            last = after[0]
    start = 0 if anchor is None else anchor.seq
    if last.seq <= start:
        raise BundleError(
            f"no signed records after {since.isoformat() if since else 'the start'}: the newest "
            f"checkpoint (seq {last.seq}) was signed at {last.signed_at}"
        )
    in_range = [c for c in ordered if start <= c.seq <= last.seq]
    missing = sorted({c.key_id for c in in_range} - set(public_keys))
    if missing:
        raise BundleError(
            f"no public key given for signing key(s) {', '.join(missing)}: add each with "
            "--public-key"
        )
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    count = 0
    with _Writer(directory / RECORDS) as out:
        for entry in _records(conn, start + 1, last.seq):
            out.write(orjson.dumps(entry.as_export(), option=orjson.OPT_APPEND_NEWLINE))
            count += 1
        files[RECORDS] = out.digest()
    if count != last.seq - start:
        raise BundleError(f"the ledger is missing records between {start + 1} and {last.seq}")
    frontier = _frontier_at(conn, anchor.seq) if anchor is not None else None
    with _Writer(directory / CHECKPOINTS) as out:
        for checkpoint in in_range:
            line: dict[str, Any] = {
                "seq": checkpoint.seq,
                "head_hash": checkpoint.head_hash,
                "signed_at": checkpoint.signed_at,
                "key_id": checkpoint.key_id,
                "signature": checkpoint.signature,
                "tree_root": checkpoint.tree_root,
            }
            if checkpoint is anchor and frontier is not None:
                line["tree_frontier"] = frontier
            out.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
        files[CHECKPOINTS] = out.digest()
    (directory / KEYS).mkdir(exist_ok=True)
    key_ids = sorted({c.key_id for c in in_range})
    for key_id in key_ids:
        pem = public_keys[key_id].public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        (directory / KEYS / f"{key_id}.pub").write_bytes(pem)
    manifest = {
        "format": BUNDLE_FORMAT,
        "created_at": None if created_at is None else utc_text(created_at),
        "since": None if since is None else utc_text(since),
        "until": None if until is None else utc_text(until),
        "first_seq": start + 1,
        "last_seq": last.seq,
        "records": count,
        "anchor": {"seq": start, "head_hash": GENESIS_HASH if anchor is None else anchor.head_hash},
        "covered_from": None if anchor is None else anchor.signed_at,
        "covered_until": last.signed_at,
        "checkpoints": len(in_range),
        "key_ids": key_ids,
        "files": files,
        "how_to_verify": (
            "lifecycle audit verify --bundle DIR [--since T] [--until T] [--public-key KEY]; "
            "by hand: each line of records.jsonl without 'hash', as canonical JSON (sorted "
            "keys, no whitespace, UTF-8), has SHA-256 'hash'; its 'prev_hash' is the hash of "
            "the line before (the first: the anchor checkpoint's head_hash, or 64 zeros); each "
            "checkpoint signs canonical JSON of {head_hash, key_id, seq, signed_at, statement, "
            "tree_root, tree_size} (see the ledger's documentation) with Ed25519"
        ),
    }
    (directory / MANIFEST).write_bytes(
        orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    )
    return BundleSummary(
        directory,
        start + 1,
        last.seq,
        count,
        len(in_range),
        None if anchor is None else anchor.signed_at,
        last.signed_at,
        until is not None and last.signed_at < utc_text(until),
    )


class _Writer:
    """A file written whole or not at all, with its SHA-256."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._hash = hashlib.sha256()

    def __enter__(self) -> _Writer:
        self._file = self._tmp.open("wb")
        return self

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self._file.write(data)

    def digest(self) -> str:
        return self._hash.hexdigest()

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._file.close()
        if exc_type is None:
            os.replace(self._tmp, self._path)
        else:
            self._tmp.unlink(missing_ok=True)


def _records(conn: Connection, first: int, last: int) -> Iterator[AuditEntry]:
    rows = conn.execute(
        select(audit_ledger)
        .where(audit_ledger.c.seq >= first, audit_ledger.c.seq <= last)
        .order_by(audit_ledger.c.seq)
        .execution_options(yield_per=5_000)
    )
    for row in rows:
        yield AuditEntry(dict(row._mapping))


def _frontier_at(conn: Connection, seq: int) -> list[str] | None:
    columns = {column["name"] for column in inspect(conn).get_columns("audit_checkpoints")}
    if "tree_frontier" not in columns:
        return None
    text = conn.execute(
        select(audit_checkpoints.c.tree_frontier).where(audit_checkpoints.c.seq == seq)
    ).scalar()
    return None if text is None else list(orjson.loads(text))


# --------------------------------------------------------------------------- verify


@dataclass(slots=True)
class BundleReport:
    """The outcome of checking a bundle; ``first_bad_seq`` names where it first goes wrong."""

    ok: bool
    records: int = 0
    checkpoints: int = 0
    first_seq: int = 0
    last_seq: int = 0
    covered_from: str | None = None
    covered_until: str | None = None
    first_bad_seq: int | None = None
    problem: str | None = None
    key_ids: list[str] = field(default_factory=list)
    tree_heads: int = 0

    def summary(self) -> str:
        if not self.ok:
            return f"TAMPERED at seq {self.first_bad_seq}: {self.problem}"
        start = f"signed {self.covered_from}" if self.covered_from else "the first record"
        return (
            f"ok: records {self.first_seq}..{self.last_seq} ({self.records}), complete from "
            f"{start} to signed {self.covered_until}; {self.checkpoints} signed checkpoints "
            f"({self.tree_heads} with tree heads) verified with key(s) {', '.join(self.key_ids)}"
        )


def bundle_keys(directory: Path) -> dict[str, Ed25519PublicKey]:
    """The public keys a bundle carries (key id -> key)."""
    keys: dict[str, Ed25519PublicKey] = {}
    folder = directory / KEYS
    for path in sorted(folder.glob("*.pub")) if folder.is_dir() else []:
        try:
            key = load_public_key(path)
        except SigningKeyError as exc:
            raise BundleError(str(exc)) from None
        keys[key_id_of(key)] = key
    return keys


def verify_bundle(
    directory: Path,
    public_keys: Mapping[str, Ed25519PublicKey] | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> BundleReport:
    """Check a bundle offline. ``public_keys`` are the keys to trust (default: the bundle's
    own, which only shows the bundle is what that key signed: compare the key ids with the
    ledger's published key). ``since``/``until`` default to the manifest's.

    Raises :class:`BundleError` when ``directory`` is not a readable bundle at all.
    """
    manifest = _read_manifest(directory)
    keys = dict(bundle_keys(directory) if public_keys is None else public_keys)
    if not keys:
        raise BundleError(f"no public key to check with: {directory / KEYS} holds none")
    checkpoints = _read_checkpoints(directory)
    try:
        first_seq = int(manifest["first_seq"])
        declared_since = manifest.get("since")
        declared_until = manifest.get("until")
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{directory / MANIFEST} is incomplete ({exc})") from None
    report = BundleReport(ok=False, first_seq=first_seq, key_ids=sorted(keys))

    def bad(seq: int, problem: str) -> BundleReport:
        report.first_bad_seq, report.problem = seq, problem
        return report

    by_seq: dict[int, tuple[Checkpoint, list[str] | None]] = {}
    for checkpoint, frontier in checkpoints:
        if checkpoint.seq in by_seq:
            return bad(checkpoint.seq, f"two checkpoints at seq {checkpoint.seq}")
        by_seq[checkpoint.seq] = (checkpoint, frontier)
    for seq in sorted(by_seq):
        if seq < first_seq - 1:
            return bad(seq, f"checkpoint at seq {seq} lies before the bundle's range")

    # the anchor: where the first record's chain must start
    anchor_seq = first_seq - 1
    tree: Frontier | None = Frontier()
    if anchor_seq == 0:
        checker = ChainChecker()
        report.covered_from = None
    else:
        if anchor_seq not in by_seq:
            return bad(
                first_seq,
                f"record {first_seq} is not anchored: no signed checkpoint at seq {anchor_seq}",
            )
        anchor, frontier = by_seq[anchor_seq]
        problem = checkpoint_problem(anchor, keys)
        if problem is not None:
            return bad(anchor_seq, problem)
        report.checkpoints += 1
        checker = ChainChecker(anchor_seq, anchor.head_hash)
        report.covered_from = anchor.signed_at
        grown = _anchor_tree(anchor, frontier)
        if isinstance(grown, str):
            return bad(anchor_seq, grown)
        tree = grown
        if tree is not None and anchor.tree_root is not None:
            report.tree_heads += 1

    # every record, with the checkpoints at its seq
    last_signed: Checkpoint | None = None
    for seq, line in _read_lines(directory / RECORDS, checker):
        if isinstance(line, str):
            return bad(seq, line)
        try:
            computed = export_hash(line)
            prev_hash, stored = str(line["prev_hash"]), str(line["hash"])
        except (KeyError, TypeError) as exc:
            return bad(seq, f"record {seq} is incomplete ({exc})")
        problem_at = checker.check(seq, prev_hash, stored, computed)
        if problem_at is not None:
            return bad(problem_at.seq, problem_at.message)
        report.records += 1
        if tree is not None:
            tree.append(record_leaf(stored))
        signed = by_seq.get(seq)
        if signed is None:
            continue
        checkpoint = signed[0]
        problem = checkpoint_problem(checkpoint, keys)
        if problem is not None:
            return bad(seq, problem)
        if checkpoint.head_hash != stored:
            return bad(
                seq,
                f"record {seq} does not match the signed checkpoint at seq {seq}: it was "
                "rewritten (with the records before it re-hashed)",
            )
        if tree is not None and checkpoint.tree_root is not None:
            if tree.root().hex() != checkpoint.tree_root:
                return bad(seq, f"the tree head signed at seq {seq} is not the records' root")
            report.tree_heads += 1
        report.checkpoints += 1
        last_signed = checkpoint

    last_seq = checker.head_seq
    if report.records == 0:
        return bad(first_seq, f"the bundle holds no records (record {first_seq} is missing)")
    beyond = sorted(seq for seq in by_seq if seq > last_seq)
    if beyond:
        checkpoint = by_seq[beyond[-1]][0]
        problem = checkpoint_problem(checkpoint, keys)
        if problem is not None:
            return bad(checkpoint.seq, problem)
        return bad(
            last_seq + 1,
            f"the records end at seq {last_seq} but a signed checkpoint covers seq "
            f"{checkpoint.seq}: records {last_seq + 1}..{checkpoint.seq} were removed",
        )
    if last_signed is None or last_signed.seq != last_seq:
        return bad(
            (last_signed.seq if last_signed else anchor_seq) + 1,
            f"records after seq {last_signed.seq if last_signed else anchor_seq} are not covered "
            "by a signed checkpoint (added to the bundle, or its last checkpoint was removed)",
        )
    report.last_seq = last_seq
    report.covered_until = last_signed.signed_at
    declared_last = manifest.get("last_seq")
    if declared_last is not None and declared_last != last_seq:
        return bad(
            min(int(declared_last), last_seq) + 1,
            f"the manifest declares records up to seq {declared_last}, the bundle ends at "
            f"{last_seq}: records were removed from its end",
        )

    # the time range it must cover
    want_since = utc_text(since) if since is not None else declared_since
    want_until = utc_text(until) if until is not None else declared_until
    if (
        want_since is not None
        and report.covered_from is not None
        and report.covered_from >= want_since
    ):
        return bad(
            first_seq,
            f"the bundle starts at record {first_seq}, after a checkpoint signed at "
            f"{report.covered_from}, not before {want_since}: records written from "
            f"{want_since} on may lie before it",
        )
    if want_until is not None and report.covered_until < want_until:
        return bad(
            last_seq + 1,
            f"the bundle ends at record {last_seq}, signed at {report.covered_until}, before "
            f"{want_until}: records written until then after seq {last_seq} are not in it",
        )
    report.ok = True
    return report


def _anchor_tree(anchor: Checkpoint, frontier: list[str] | None) -> Frontier | str | None:
    """The Merkle tree at the anchor (None: not checkable, the ledger predates tree heads),
    or what is wrong with it."""
    if anchor.tree_root is None or frontier is None:
        return None
    try:
        tree = Frontier.from_hex(anchor.seq, frontier)
    except (ValueError, TypeError) as exc:
        return f"the anchor's tree frontier is not readable ({exc})"
    if tree.root().hex() != anchor.tree_root:
        return f"the anchor's tree frontier does not give its signed root (seq {anchor.seq})"
    return tree


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    try:
        manifest = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise BundleError(f"{directory} is not a bundle: no {MANIFEST}") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise BundleError(f"{path} is not readable: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path} is not a {BUNDLE_FORMAT} manifest")
    return manifest


def _read_checkpoints(directory: Path) -> list[tuple[Checkpoint, list[str] | None]]:
    path = directory / CHECKPOINTS
    out = []
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise BundleError(f"{path} is not readable: {exc}") from None
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
            checkpoint = checkpoint_of(line)
            frontier = line.get("tree_frontier")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{path} line {number} is not a checkpoint ({exc})") from None
        out.append((checkpoint, frontier if isinstance(frontier, list) else None))
    return out


def _read_lines(path: Path, checker: ChainChecker) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(seq, record) per line; (expected seq, problem) for a line that cannot be read."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise BundleError(f"{path} is not readable: {exc}") from None
    with handle:
        for raw in handle:
            if not raw.strip():
                continue
            try:
                line = orjson.loads(raw)
                seq = int(line["seq"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                expected = checker.head_seq + 1
                yield expected, f"the line after record {checker.head_seq} is not a record"
                return
            if not isinstance(line, dict):
                yield checker.head_seq + 1, "a line of records.jsonl is not an object"
                return
            yield seq, line


__all__ = [
    "BUNDLE_FORMAT",
    "BundleError",
    "BundleReport",
    "BundleSummary",
    "bundle_keys",
    "export_bundle",
    "verify_bundle",
]
