"""``lifecycle audit``: the analysts' and auditors' commands over the audit ledger.

* ``export``: stream records (filtered by subject, time, kind, decision) as JSON lines or CSV.
* ``verify``: check every hash, link and signed checkpoint; exit 0 when intact, 1 naming the
  first bad record when not, 2 when it cannot check (no ledger, no public key).
* ``replay``: reads ``privacy.audit`` from the beginning (or follows it), checking the chain.

Nothing here writes to the ledger. Records hold pseudonyms (``subject_ref``), never personal
data; ``--subject`` turns a customer's id into its pseudonym with the key store's key.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import orjson
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from core.db import make_engine
from core.errors import LifecycleError
from core.instants import INSTANT
from core.settings import Settings, load_settings
from lifecycle.cli.base import EXIT_ERROR, bus, fail, reading_options
from lifecycle.runtime import Runtime
from sinks.export import FORMATS, writer
from sinks.ledger.queries import RecordFilters

EXIT_TAMPERED = 1


def _progress_bar(total: int | None, what: str) -> Any:
    """A tqdm bar on stderr, only when stderr is a terminal (never in pipes, files, CI logs)."""
    from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs in the dev set

    return tqdm(
        total=total, unit=" records", desc=what, file=sys.stderr, disable=not sys.stderr.isatty()
    )


@contextmanager
def _ledger_engine(settings: Settings) -> Iterator[Engine]:
    """The ledger's engine; refuses to conjure an empty SQLite file where none is."""
    url = make_url(settings.db_url)
    database = url.database if url.get_backend_name() == "sqlite" else None
    if database not in (None, "", ":memory:") and not Path(str(database)).exists():
        fail(f"no audit ledger at {url.database} (set LIFECYCLE_DB_URL or LIFECYCLE_DATA_DIR)")
    engine = make_engine(settings.db_url)
    try:
        yield engine
    finally:
        engine.dispose()


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
    """The tamper-evident audit ledger: export it, verify it, replay privacy.audit."""


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
@click.option(
    "--format",
    "output_format",
    type=click.Choice(FORMATS),
    default="jsonl",
    show_default=True,
)
def export(
    subject_id: str | None,
    subject_ref: str | None,
    since: datetime | None,
    until: datetime | None,
    kind: str | None,
    decision: str | None,
    output_format: str,
) -> None:
    """Write ledger records to stdout in seq order, one a line.

    Each JSON line, without its "hash" key and encoded canonically (sorted keys, no spaces,
    UTF-8), hashes (SHA-256) to "hash": anyone can recheck an export.
    """
    from sinks.ledger import count_records, iter_records

    if subject_id is not None and subject_ref is not None:
        raise click.UsageError("give --subject or --subject-ref, not both")
    settings = load_settings()
    try:
        if subject_id is not None:
            subject_ref = _subject_ref(settings, subject_id)
        filters = RecordFilters(
            subject_ref=subject_ref, since=since, until=until, kind=kind, decision=decision
        )
        out = click.get_binary_stream("stdout")
        with _ledger_engine(settings) as engine:
            total = count_records(engine, **filters) if sys.stderr.isatty() else None
            write = writer(output_format, out)
            with _progress_bar(total, "export") as bar:
                for entry in iter_records(engine, **filters):
                    write(entry.as_export())
                    bar.update(1)
            out.flush()
    except LifecycleError as exc:
        fail(str(exc))


@audit.command("verify")
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ed25519 public key (PEM) of the checkpoint signer; repeat after a key rotation. "
    "Default: LIFECYCLE_SIGNING_KEY_FILE + .pub",
)
@click.option("--json", "as_json", is_flag=True, help="print the report as one JSON object")
def verify_command(public_keys: tuple[Path, ...], as_json: bool) -> None:
    """Check the whole ledger: every hash, link and signed checkpoint.

    Exit 0 and a one-line summary when intact; exit 1 naming the first bad seq and what is
    wrong there; exit 2 when it cannot check.
    """
    from sinks.checkpoints import load_public_key, public_key_path
    from sinks.ledger import verify

    settings = load_settings()
    try:
        keys = [
            load_public_key(path)
            for path in (public_keys or (public_key_path(settings.signing_key_file),))
        ]
        with _ledger_engine(settings) as engine, _progress_bar(None, "verify") as bar:

            def progress(checked: int) -> None:
                bar.update(checked - bar.n)

            report = verify(engine, keys, progress=progress)
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


__all__ = ["EXIT_ERROR", "EXIT_TAMPERED", "audit"]
