"""``lifecycle keys``: master-key rotation, and destroying erased keys again after a restore."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from core.instants import INSTANT
from core.settings import load_settings
from lifecycle.runtime import Runtime


@click.group()
def keys() -> None:
    """The key store: master-key rotation, and destroying erased keys again after a restore."""


@keys.command("new-master-key")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def keys_new_master_key(path: Path) -> None:
    """Create a new master key file at PATH (mode 0600)."""
    from streams.keys import load_master_key

    if path.exists():
        raise click.UsageError(f"{path} exists; refusing to overwrite a master key")
    load_master_key(path)
    click.echo(f"created {path}", err=True)


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-wrap every data key (and the source secrets) under LIFECYCLE_MASTER_KEY_FILE (the
    new key), opening those not yet re-wrapped with LIFECYCLE_PREVIOUS_MASTER_KEY_FILE (the
    old one)."""
    settings = load_settings()
    if settings.previous_master_key_file is None:
        raise click.UsageError("set LIFECYCLE_PREVIOUS_MASTER_KEY_FILE to the key being retired")
    count = Runtime(settings).keystore.rotate_master_key()
    click.echo(f"re-wrapped {count} keys under {settings.master_key_file}", err=True)


@keys.command("reshred")
@click.option(
    "--since",
    type=INSTANT,
    default=None,
    help="Only revocations at or after this time (the restored backup's; ISO-8601, UTC "
    "without a zone). Default: all of them.",
)
def keys_reshred(since: datetime | None) -> None:
    """Destroy again every key that privacy.key-revocations says was destroyed: run after
    restoring the key store from a backup, before any worker or publisher starts.

    Each revocation destroys again exactly the key versions it names (older records: the keys
    of its customer and categories created before it), so a key made after the erasure (a
    later collection) is kept; a rotation destroyed nothing and is skipped. Safe to repeat."""
    from streams.revocations import REPLAYED, read_revocations, replay

    settings = load_settings()
    runtime = Runtime(settings)
    revocations = destroyed = 0
    for record in read_revocations(settings.kafka_client_config(), runtime.codec):
        if since is not None and record["revoked_at"] < since:
            continue
        revocations += 1
        destroyed += replay(runtime.keystore, record, REPLAYED)
    click.echo(
        f"replayed {revocations} revocations: {destroyed} categories' keys destroyed again",
        err=True,
    )
