"""Master-key rotation: every live data key (and the store's own keys) re-wrapped under the
current master key, in batches, while workers run.

Safe to run while workers run, and to run again: processes that hold both keys (current and
previous) open either wrapping meanwhile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine, select, tuple_, update

from streams.keys.tables import WRAPPED_KEY_COLUMNS, data_keys, keystore_meta

if TYPE_CHECKING:
    from streams.keys.wrapping import EnvelopeKeyStore


def rotate_master_key(store: EnvelopeKeyStore, engine: Engine, batch: int = 1_000) -> int:
    """Re-wrap every live data key (and the store's own keys) under the current master key;
    how many were re-wrapped. Safe to run while workers run, and to run again: processes
    that hold both keys (current and previous) open either wrapping meanwhile."""
    rewrapped = 0
    with engine.begin() as conn:
        for name, value in conn.execute(select(keystore_meta.c.name, keystore_meta.c.value)).all():
            new = store.rewrap(value, name)
            if new is not None:
                conn.execute(
                    update(keystore_meta).where(keystore_meta.c.name == name).values(value=new)
                )
                rewrapped += 1
    last: tuple[str, str, int] = ("", "", 0)
    live = data_keys.c.wrapped_key.is_not(None)
    while True:
        with engine.begin() as conn:
            rows = conn.execute(
                select(*WRAPPED_KEY_COLUMNS)
                .where(
                    live,
                    tuple_(data_keys.c.subject_ref, data_keys.c.category, data_keys.c.version)
                    > last,
                )
                .order_by(data_keys.c.subject_ref, data_keys.c.category, data_keys.c.version)
                .limit(batch)
            ).all()
            for ref, category, version, wrapped in rows:
                new = store.rewrap(wrapped, store.key_label(ref, category, version))
                if new is None:
                    continue
                conn.execute(
                    update(data_keys)
                    .where(
                        data_keys.c.subject_ref == ref,
                        data_keys.c.category == category,
                        data_keys.c.version == version,
                        live,
                    )
                    .values(wrapped_key=new)
                )
                rewrapped += 1
        if len(rows) < batch:
            return rewrapped
        last = (rows[-1][0], rows[-1][1], rows[-1][2])
