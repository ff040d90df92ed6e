"""The result of a scheduled ``lifecycle audit verify`` as Prometheus metrics in a file
(``--metrics-file``), for node-exporter's textfile collector.

Why a file: a verify is a job that ends, so there is nothing left to scrape, and a
Pushgateway would keep the last pushed value forever and is one more service to run. A file
written whole (written beside, then renamed) outlives the job; node-exporter's textfile
collector, present on most Prometheus hosts, serves it; and its timestamp metric shows when a
verify stopped running, so a stale file is an alert of its own.

Series (no labels: one ledger per file)::

    lifecycle_audit_verify_ok                           1 intact, 0 not (tampered or unchecked)
    lifecycle_audit_verify_tampered                     1 when the ledger failed the check
    lifecycle_audit_verify_error                        1 when it could not check (no database)
    lifecycle_audit_verify_first_bad_seq                the first bad seq (0 when intact)
    lifecycle_audit_verify_records                      records checked
    lifecycle_audit_verify_signed_seq                   seq of the last signed checkpoint
    lifecycle_audit_verify_duration_seconds             how long the check took
    lifecycle_audit_verify_last_run_timestamp_seconds   when it ended (Unix time)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

__all__ = ["VERIFY_METRICS", "VerifyOutcome", "verify_registry", "write_verify_metrics"]

VERIFY_METRICS = (
    ("lifecycle_audit_verify_ok", "1 when the last audit verify found the ledger intact, else 0"),
    ("lifecycle_audit_verify_tampered", "1 when the last audit verify found tampering"),
    ("lifecycle_audit_verify_error", "1 when the last audit verify could not check the ledger"),
    ("lifecycle_audit_verify_first_bad_seq", "First bad seq the last audit verify named (0: none)"),
    ("lifecycle_audit_verify_records", "Records the last audit verify checked"),
    ("lifecycle_audit_verify_signed_seq", "Seq of the last signed checkpoint that verified"),
    ("lifecycle_audit_verify_duration_seconds", "Seconds the last audit verify took"),
    ("lifecycle_audit_verify_last_run_timestamp_seconds", "When the last audit verify ended"),
)


@dataclass(frozen=True, slots=True)
class VerifyOutcome:
    """One verify run: ``ok``; ``tampered`` (a problem found) or not (could not check)."""

    ok: bool
    tampered: bool
    records: int
    signed_seq: int
    first_bad_seq: int | None
    duration_seconds: float
    ended_at: float  # Unix time


def verify_registry(outcome: VerifyOutcome) -> CollectorRegistry:
    """The metrics of ``outcome`` in a registry of their own."""
    registry = CollectorRegistry(auto_describe=True)
    values = (
        1.0 if outcome.ok else 0.0,
        1.0 if outcome.tampered else 0.0,
        0.0 if outcome.ok or outcome.tampered else 1.0,
        float(outcome.first_bad_seq or 0),
        float(outcome.records),
        float(outcome.signed_seq),
        outcome.duration_seconds,
        outcome.ended_at,
    )
    for (name, help_text), value in zip(VERIFY_METRICS, values, strict=True):
        Gauge(name, help_text, registry=registry).set(value)
    return registry


def write_verify_metrics(path: Path, outcome: VerifyOutcome) -> None:
    """Replace ``path`` (a ``.prom`` file) with the metrics of ``outcome``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), verify_registry(outcome))
