"""Reveals by the command line, recorded as the console's are: ``lifecycle subject report``
(values, for a privacy officer) and ``lifecycle events tail --decrypt`` publish a
``values_revealed`` record (:mod:`processors.requests`) for each customer whose values they
show, before showing them. Who: the operating-system user running the command.

Without a reachable bus the record cannot be made, and nothing is revealed."""

from __future__ import annotations

import getpass
from collections.abc import Iterable
from datetime import UTC, datetime

import click

from core.settings import Settings
from processors.policy import PolicyBook
from processors.requests import PRIVACY_OFFICER, LedgerRecorder, Staff, revealed
from streams.codec import Codec


def cli_staff() -> Staff:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        name = "unknown"
    return Staff(name, PRIVACY_OFFICER, "cli")


class RevealLog:
    """Records each customer's reveal of a set of categories once per command run."""

    def __init__(self, settings: Settings, codec: Codec, book: PolicyBook) -> None:
        if settings.kafka_bootstrap is None:
            raise click.UsageError(
                "revealing values is recorded on the audit ledger through privacy.decisions: "
                "set KAFKA_BOOTSTRAP (or leave values hidden)"
            )
        self._recorder = LedgerRecorder(settings.kafka_client_config(), codec)
        self._book = book
        self._staff = cli_staff()
        self._seen: set[tuple[str, frozenset[str]]] = set()

    def revealed(self, subject_ref: str, categories: Iterable[str]) -> None:
        """Record that ``categories`` of ``subject_ref`` are about to be shown (durable on the
        bus when this returns)."""
        wanted = frozenset(categories)
        if not wanted or (subject_ref, wanted) in self._seen:
            return
        now = datetime.now(UTC)
        record = revealed(
            self._staff,
            subject_ref=subject_ref,
            categories=wanted,
            policy=self._book.in_force(now),
            at=now,
        )
        self._recorder.record(record)
        self._seen.add((subject_ref, wanted))


__all__ = ["RevealLog", "cli_staff"]
