"""``lifecycle audit``: the analysts' and auditors' commands over the audit ledger.

* ``export``: stream records (filtered by subject, time, kind, decision, reason code, role,
  source, purpose, recipient) as JSON lines, CSV or Parquet; or ``--bundle`` a range with its
  signed checkpoints and public keys, for offline checks.
* ``verify``: check every hash, link and signed checkpoint (or a bundle, offline); exit 0 when
  intact, 1 naming the first bad record when not, 2 when it cannot check (no ledger, no public
  key). ``--metrics-file`` (and ``--every``) for a scheduled verify.
* ``prove`` and ``check-receipt``: a record's inclusion proof against a signed tree head, and
  its offline check (with the consistency of two tree heads).
* ``replay``: reads ``privacy.audit`` from the beginning (or follows it), checking the chain.

Nothing here writes to the ledger. Records hold pseudonyms (``subject_ref``), never personal
data; ``--subject`` turns a customer's id into its pseudonym with the key store's key.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import click
import orjson

from core.clock import SystemClock
from core.db import make_engine
from core.errors import LifecycleError
from core.instants import INSTANT
from core.settings import Settings, load_settings
from lifecycle.cli.base import (
    EXIT_ERROR,
    EXIT_TAMPERED,
    bus,
    fail,
    ledger_engine,
    load_public_keys,
    reading_options,
)
from lifecycle.runtime import Runtime
from sinks.export import FORMATS, writer
from sinks.ledger.queries import RecordFilters

PARQUET = "parquet"


def _progress_bar(total: int | None, what: str) -> Any:
    """A tqdm bar on stderr, only when stderr is a terminal (never in pipes, files, CI logs)."""
    from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs in the dev set

    return tqdm(
        total=total, unit=" records", desc=what, file=sys.stderr, disable=not sys.stderr.isatty()
    )


def _subject_ref(settings: Settings, subject_id: str) -> str:
    from streams.keys import open_keystore

    if not settings.master_key_file.exists():
        fail(
            f"--subject needs the key store's master key, and {settings.master_key_file} does "
            "not exist (set LIFECYCLE_MASTER_KEY_FILE, or use --subject-ref)"
        )
    engine = make_engine(settings.db_url)
    try:
        return open_keystore(engine, settings.master_key_file).subject_ref(subject_id)
    finally:
        engine.dispose()


@click.group()
def audit() -> None:
    """The tamper-evident audit ledger: export, verify, prove records, replay privacy.audit."""


@audit.command()
@click.option(
    "--subject",
    "subject_id",
    metavar="ID",
    help="only this customer (their subject_id; looked up as its pseudonym)",
)
@click.option("--subject-ref", metavar="REF", help="only this pseudonym, as found in the ledger")
@click.option("--since", type=INSTANT, help="occurred at or after (ISO-8601; UTC if no zone)")
@click.option("--until", type=INSTANT, help="occurred before (ISO-8601; UTC if no zone)")
@click.option("--kind", metavar="K", help="event kind: collected, used, shared, ...")
@click.option("--decision", type=click.Choice(["allow", "deny"]), help="only this verdict")
@click.option("--reason-code", metavar="CODE", help="only this reason code")
@click.option("--role", metavar="ROLE", help="only events whose actor had this role")
@click.option("--source", metavar="SYSTEM", help="only events from this publishing system")
@click.option(
    "--purpose", metavar="P", help="only this purpose (a use's or share's, or one collected for)"
)
@click.option("--recipient", metavar="R", help="only shares with this recipient")
@click.option(
    "--format",
    "output_format",
    type=click.Choice([*FORMATS, PARQUET]),
    default="jsonl",
    show_default=True,
    help="parquet: typed columns (needs --output and pip install 'lifecycle[analysis]')",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write to this file instead of stdout",
)
@click.option(
    "--bundle",
    type=click.Path(file_okay=False, path_type=Path),
    help="write offline evidence into this new folder: the records written (recorded_at) in "
    "--since..--until, the signed checkpoints around them and the public keys",
)
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="--bundle: public key(s) to include (default: LIFECYCLE_SIGNING_KEY_FILE + .pub)",
)
def export(
    subject_id: str | None,
    subject_ref: str | None,
    since: datetime | None,
    until: datetime | None,
    kind: str | None,
    decision: str | None,
    reason_code: str | None,
    role: str | None,
    source: str | None,
    purpose: str | None,
    recipient: str | None,
    output_format: str,
    output: Path | None,
    bundle: Path | None,
    public_keys: tuple[Path, ...],
) -> None:
    """Write ledger records to stdout in seq order, one a line (or a Parquet file, or a bundle).

    Each JSON line, without its "hash" key and encoded canonically (sorted keys, no spaces,
    UTF-8), hashes (SHA-256) to "hash": anyone can recheck an export.
    """
    from sinks.ledger import count_records, iter_records

    if subject_id is not None and subject_ref is not None:
        raise click.UsageError("give --subject or --subject-ref, not both")
    if bundle is not None:
        record_filters = (subject_id, subject_ref, kind, decision, reason_code, role, source)
        if any((*record_filters, purpose, recipient, output)) or output_format != "jsonl":
            raise click.UsageError(
                "--bundle holds a whole range of the ledger: only --since, --until and "
                "--public-key go with it"
            )
        _export_bundle(bundle, since, until, public_keys)
        return
    if output_format == PARQUET and output is None:
        raise click.UsageError("--format parquet needs --output FILE")
    settings = load_settings()
    try:
        if subject_id is not None:
            subject_ref = _subject_ref(settings, subject_id)
        filters = RecordFilters(
            subject_ref=subject_ref,
            since=since,
            until=until,
            kind=kind,
            decision=decision,
            reason_code=reason_code,
            role=role,
            source=source,
            purpose=purpose,
            recipient=recipient,
        )
        with ledger_engine(settings) as engine:
            total = count_records(engine, **filters) if sys.stderr.isatty() else None
            if output_format == PARQUET:
                assert output is not None
                from sinks.columnar import write_parquet

                with _progress_bar(total, "export") as bar:
                    rows = write_parquet(_counted(iter_records(engine, **filters), bar), output)
                click.echo(f"wrote {rows} records to {output}", err=True)
                return
            with _output(output) as out:
                write = writer(output_format, out)
                with _progress_bar(total, "export") as bar:
                    for entry in iter_records(engine, **filters):
                        write(entry.as_export())
                        bar.update(1)
    except LifecycleError as exc:
        fail(str(exc))


def _counted(entries: Iterator[Any], bar: Any) -> Iterator[Any]:
    for entry in entries:
        yield entry
        bar.update(1)


@contextmanager
def _output(path: Path | None) -> Iterator[IO[bytes]]:
    if path is None:
        out = click.get_binary_stream("stdout")
        yield out
        out.flush()
        return
    with path.open("wb") as out:
        yield out


def _export_bundle(
    directory: Path, since: datetime | None, until: datetime | None, paths: tuple[Path, ...]
) -> None:
    from sinks.bundle import export_bundle
    from sinks.checkpoints import public_key_path

    settings = load_settings()
    try:
        keys = load_public_keys(paths or (public_key_path(settings.signing_key_file),))
        with ledger_engine(settings) as engine:
            summary = export_bundle(
                engine, directory, keys, since=since, until=until, created_at=SystemClock()()
            )
    except LifecycleError as exc:
        fail(str(exc))
    start = f"signed {summary.covered_from}" if summary.covered_from else "the first record"
    click.echo(
        f"bundle {directory}: records {summary.first_seq}..{summary.last_seq} "
        f"({summary.records}), {summary.checkpoints} signed checkpoints, complete from {start} "
        f"to signed {summary.covered_until}",
        err=True,
    )
    if summary.short_of_until:
        click.echo(
            f"note: the newest checkpoint was signed at {summary.covered_until}, before "
            "--until: later records are not signed yet; export again later to cover up to it",
            err=True,
        )


@audit.command("verify")
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ed25519 public key (PEM) of the checkpoint signer; repeat after a key rotation. "
    "Default: LIFECYCLE_SIGNING_KEY_FILE + .pub (with --bundle: the bundle's own keys)",
)
@click.option("--json", "as_json", is_flag=True, help="print the report as one JSON object")
@click.option(
    "--bundle",
    type=click.Path(file_okay=False, path_type=Path),
    help="check an exported bundle offline instead (no database, no bus)",
)
@click.option("--since", type=INSTANT, help="--bundle: it must hold every record written since")
@click.option("--until", type=INSTANT, help="--bundle: it must hold every record written before")
@click.option(
    "--metrics-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="also write the result as Prometheus metrics (a .prom file for node-exporter's "
    "textfile collector)",
)
@click.option(
    "--every",
    type=click.FloatRange(min=1),
    metavar="SECONDS",
    help="keep running: verify again every SECONDS (needs --metrics-file)",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    help="processes that check the records of a large ledger (default: the usable cores)",
)
def verify_command(
    public_keys: tuple[Path, ...],
    as_json: bool,
    bundle: Path | None,
    since: datetime | None,
    until: datetime | None,
    metrics_file: Path | None,
    every: float | None,
    jobs: int | None,
) -> None:
    """Check the whole ledger: every hash, link and signed checkpoint (and tree head).

    Exit 0 and a one-line summary when intact; exit 1 naming the first bad seq and what is
    wrong there; exit 2 when it cannot check.
    """
    if bundle is not None:
        if metrics_file is not None or every is not None or jobs is not None:
            raise click.UsageError(
                "--metrics-file, --every and --jobs check the ledger, not a bundle"
            )
        _verify_bundle(bundle, public_keys, since, until, as_json)
        return
    if since is not None or until is not None:
        raise click.UsageError("--since and --until go with --bundle")
    if every is not None and metrics_file is None:
        raise click.UsageError("--every needs --metrics-file (where the result goes)")
    while True:
        code = _verify_ledger(public_keys, as_json, metrics_file, jobs)
        if every is None:
            if code:
                sys.exit(code)
            return
        time.sleep(every)


def _verify_ledger(
    public_keys: tuple[Path, ...], as_json: bool, metrics_file: Path | None, jobs: int | None
) -> int:
    """One verify of the configured ledger: printed, written to ``metrics_file``; exit code."""
    from lifecycle.verify_metrics import VerifyOutcome, write_verify_metrics
    from sinks.checkpoints import public_key_path
    from sinks.ledger import verify

    started = time.monotonic()
    report = None
    try:
        settings = load_settings()
        paths = public_keys or (public_key_path(settings.signing_key_file),)
        keys = list(load_public_keys(paths).values())
        with ledger_engine(settings) as engine, _progress_bar(None, "verify") as bar:

            def progress(checked: int) -> None:
                bar.update(checked - bar.n)

            report = verify(engine, keys, progress=progress, jobs=jobs)
        code = EXIT_TAMPERED if not report.ok else 0
    except LifecycleError as exc:
        click.echo(f"error: {exc}", err=True)
        code = EXIT_ERROR
    except SystemExit as exc:  # ledger_engine: no ledger there
        code = exc.code if isinstance(exc.code, int) else EXIT_ERROR
    if report is not None:
        if as_json:
            click.echo(orjson.dumps(dataclasses.asdict(report)).decode())
        else:
            click.echo(report.summary())
    if metrics_file is not None:
        write_verify_metrics(
            metrics_file,
            VerifyOutcome(
                ok=code == 0,
                tampered=code == EXIT_TAMPERED,
                records=0 if report is None else report.records,
                signed_seq=0 if report is None else report.signed_seq,
                first_bad_seq=None if report is None else report.first_bad_seq,
                duration_seconds=time.monotonic() - started,
                ended_at=SystemClock()().timestamp(),
            ),
        )
    return code


def _verify_bundle(
    bundle: Path,
    public_keys: tuple[Path, ...],
    since: datetime | None,
    until: datetime | None,
    as_json: bool,
) -> None:
    from sinks.bundle import bundle_keys, verify_bundle

    try:
        trusted = load_public_keys(public_keys) if public_keys else None
        if trusted is None:
            own = bundle_keys(bundle)
            click.echo(
                f"note: trusting the bundle's own key(s) {', '.join(sorted(own)) or '(none)'}: "
                "compare them with the ledger's published key, or pass --public-key",
                err=True,
            )
        report = verify_bundle(bundle, trusted, since=since, until=until)
    except LifecycleError as exc:
        fail(str(exc))
    if as_json:
        click.echo(orjson.dumps(dataclasses.asdict(report)).decode())
    else:
        click.echo(report.summary())
    if not report.ok:
        sys.exit(EXIT_TAMPERED)


# --------------------------------------------------------------------------- audit replay


@audit.command("replay")
@reading_options(follow_help="keep reading new records")
def replay_command(from_beginning: bool, follow: bool) -> None:
    """Read privacy.audit, checking the hash chain as it goes (JSON lines on stdout)."""
    from sinks.replay import replay

    with bus(load_settings()) as live:
        codec = Runtime(live).codec
        out = sys.stdout.buffer

        def emit(line: bytes) -> None:
            out.write(line + b"\n")
            if follow:
                out.flush()

        try:
            report = replay(
                live.kafka_consumer_config(),  # --follow: a new record shows within the wait
                codec,
                emit,
                from_beginning=from_beginning or not follow,
                follow=follow,
            )
        except KeyboardInterrupt:
            return
    out.flush()
    click.echo(report.summary(), err=True)
    if not report.ok:
        sys.exit(EXIT_TAMPERED)


@audit.command("recover")
def audit_recover() -> None:
    """Bring a ledger database restored from a backup forward from privacy.audit: check the
    topic's whole chain and add every record past the database's head (then sign it).

    Run after `lifecycle keys reshred` and before any worker starts; safe to repeat."""
    from sinks.ledger import open_audit_sink
    from sinks.recovery import recover_from_topic

    settings = load_settings()
    runtime = Runtime(settings)
    with open_audit_sink(settings) as sink:
        added = recover_from_topic(settings.kafka_client_config(), runtime.codec, sink)
        seq, _hash = sink.head()
    click.echo(f"added {added} records from privacy.audit; ledger head: seq {seq}", err=True)


# --------------------------------------------------------------------------- receipts


def _read_receipt(path: Path) -> dict[str, Any]:
    from sinks.receipts import load_receipt

    try:
        return load_receipt(path.read_bytes())
    except (OSError, ValueError) as exc:
        fail(f"{path} is not a readable receipt: {exc}")


@audit.command("prove")
@click.option("--seq", type=click.IntRange(min=1), help="the record to prove")
@click.option("--request-id", metavar="R", help="the record of erasure request R")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write the receipt here (default: stdout)",
)
@click.option(
    "--consistent-with",
    "older_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="an older receipt: add the proof that its tree head is a prefix of this one's",
)
def prove_command(
    seq: int | None, request_id: str | None, output: Path | None, older_path: Path | None
) -> None:
    """Write a receipt: a record, its inclusion proof and the signed tree head it is in.

    Anyone with the ledger's public key checks it alone: lifecycle audit check-receipt.
    Exit 1 when the ledger no longer extends the --consistent-with receipt's tree.
    """
    from sinks.receipts import RewrittenHistoryError, dump_receipt, find_erasure, make_receipt

    if (seq is None) == (request_id is None):
        raise click.UsageError("give --seq N or --request-id R")
    older = None if older_path is None else _read_receipt(older_path)
    settings = load_settings()
    try:
        with ledger_engine(settings) as engine:
            if request_id is not None:
                seqs = find_erasure(engine, request_id)
                if not seqs:
                    fail(f"no erasure record for request {request_id!r} in the ledger")
                if len(seqs) > 1:
                    click.echo(
                        f"request {request_id!r} was answered {len(seqs)} times (seqs "
                        f"{', '.join(map(str, seqs))}): proving the latest",
                        err=True,
                    )
                seq = seqs[-1]
            assert seq is not None
            receipt = make_receipt(engine, seq, older=older)
    except RewrittenHistoryError as exc:
        click.echo(f"INCONSISTENT: {exc}", err=True)
        sys.exit(EXIT_TAMPERED)
    except LifecycleError as exc:
        fail(str(exc))
    data = dump_receipt(receipt)
    if output is None:
        click.get_binary_stream("stdout").write(data)
    else:
        output.write_bytes(data)
    head = receipt["tree_head"]
    click.echo(
        f"receipt for record {seq}: tree of {head['tree_size']} records, root {head['root']}"
        + (f" -> {output}" if output else ""),
        err=True,
    )


@audit.command("check-receipt")
@click.argument("receipt_path", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="the ledger's Ed25519 public key (PEM); repeat after a key rotation",
)
@click.option(
    "--consistent-with",
    "older_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="another receipt: check that the smaller tree head is a prefix of the larger",
)
def check_receipt_command(
    receipt_path: Path, public_keys: tuple[Path, ...], older_path: Path | None
) -> None:
    """Check a receipt offline: its record's hash, the tree head's signature, the inclusion
    proof (and with --consistent-with, that one tree head extends the other).

    Exit 0 when it holds, 1 when something was changed, 2 when it cannot be checked.
    """
    from sinks.receipts import check_consistency, check_receipt

    receipt = _read_receipt(receipt_path)
    try:
        keys = load_public_keys(public_keys)
    except LifecycleError as exc:
        fail(str(exc))
    if older_path is None:
        outcome = check_receipt(receipt, keys)
    else:
        outcome = check_consistency(receipt, _read_receipt(older_path), keys)
    click.echo(outcome.message)
    if not outcome.checkable:
        sys.exit(EXIT_ERROR)
    if not outcome.ok:
        sys.exit(EXIT_TAMPERED)


__all__ = ["EXIT_ERROR", "EXIT_TAMPERED", "audit"]
