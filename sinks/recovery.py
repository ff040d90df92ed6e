"""Bring a restored ledger database forward from ``privacy.audit``.

The topic holds every record the ledger ever stored, with its seq and hashes, and never
expires. After the database is restored from a backup, the records written since are on the
topic but not in the database; the workers would otherwise go on from the old head and give
new decisions seqs the topic already carries. :func:`recover_from_topic` reads the topic from
its beginning, checks the whole chain as ``audit replay`` does, and adds every record past the
database's head (:meth:`~sinks.ledger.SqlAuditSink.adopt`), which refuses one that does not
continue the database's own chain.
"""

from __future__ import annotations

from typing import Any

from sinks.canonical import row_hash
from sinks.chain import ChainFollower
from sinks.exceptions import LedgerError
from sinks.ledger import SqlAuditSink
from sinks.stored import audit_record_row
from streams.codec import Codec
from streams.exceptions import DecodeError
from streams.reader import TopicReader
from streams.topics import AUDIT

BATCH = 1_000


def recover_from_topic(client_config: dict[str, str], codec: Codec, sink: SqlAuditSink) -> int:
    """Add to ``sink`` every record of ``privacy.audit`` past its head; how many were added.

    Raises :class:`LedgerError` naming the seq where the topic's chain breaks or stops
    continuing the database's; records before that point are kept (they verified)."""
    follower = ChainFollower()
    pending: list[dict[str, Any]] = []
    added = 0
    reader = TopicReader(client_config, AUDIT, partitions=[0], label="recover")
    for message in reader.messages():
        try:
            record = codec.decode("lifecycle.AuditRecord", message.value() or b"", AUDIT)
            row = audit_record_row(record)
        except (DecodeError, ValueError) as exc:
            raise LedgerError(
                f"{AUDIT} offset {message.offset()} is not an audit record: {exc}"
            ) from exc
        pending.extend(
            follower.feed_hashed(row, row["seq"], row["prev_hash"], row["hash"], row_hash(row))
        )
        if follower.problem is not None:
            break
        if len(pending) >= BATCH:
            added += sink.adopt(pending)
            pending = []
    report = follower.finish()
    added += sink.adopt(pending)
    if not report.ok:
        raise LedgerError(
            f"{AUDIT} breaks at seq {report.first_bad_seq}: {report.problem}; "
            f"{added} records before it were added"
        )
    return added
