"""The kinds of customer-data event, each defined once and read by every part that treats them.

A kind says which fields its body holds (in the order the publisher validates them, each with
its form), which branch of the ``lifecycle.CustomerEvent`` body union carries it, and how the
decision engine judges it. The publisher, the intake, the decision rules, the subject report and
the metrics all read this table. Adding a kind: an entry here, its Avro record beside this file
(and a branch of the body union), and, only for a new way of judging, a rule in
:mod:`processors.rules`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

Form = Literal[
    "channel",
    "purposes",
    "data",
    "categories",
    "categories_or_all",
    "purpose",
    "party",
    "text",
    "flag",
]
"""What a body field holds: a channel name; a non-empty list of purpose names; category ->
value (encrypted on the bus); a non-empty list of category names, or an absent one meaning all
categories; one purpose name; a party's lower_snake_case name; non-empty text; true or false."""

Judgement = Literal["collection", "use", "consent", "erasure"]
"""How the decision engine judges a kind (one rule set each)."""


@dataclass(frozen=True, slots=True)
class BodyField:
    name: str
    form: Form


@dataclass(frozen=True, slots=True)
class EventKind:
    name: str
    fields: tuple[BodyField, ...]
    """The body's fields, in the order they are validated (the first wrong one is named)."""
    body_record: str
    """The Avro record of the body: its branch of the ``CustomerEvent`` body union."""
    judged_as: Judgement
    set_by_publisher: tuple[str, ...] = ()
    """Body fields of the record on the bus that the publisher fills in (never in the input)."""
    field_names: frozenset[str] = field(init=False, repr=False, compare=False)
    """The body's fields in the input."""
    record_field_names: frozenset[str] = field(init=False, repr=False, compare=False)
    """The body's fields on the bus: the input's and those the publisher sets."""
    carries_values: bool = field(init=False, repr=False, compare=False)
    """Whether the body holds personal values (encrypted field by field on the bus)."""

    def __post_init__(self) -> None:
        # worked out once: every event's validation and publication asks
        names = frozenset(body_field.name for body_field in self.fields)
        object.__setattr__(self, "field_names", names)
        object.__setattr__(self, "record_field_names", names | frozenset(self.set_by_publisher))
        carries = any(body_field.form == "data" for body_field in self.fields)
        object.__setattr__(self, "carries_values", carries)


COLLECTED: Final = "collected"
USED: Final = "used"
SHARED: Final = "shared"
DELETION_REQUESTED: Final = "deletion_requested"
CONSENT_CHANGED: Final = "consent_changed"

KINDS: Final[Mapping[str, EventKind]] = MappingProxyType(
    {
        kind.name: kind
        for kind in (
            EventKind(
                COLLECTED,
                (
                    BodyField("channel", "channel"),
                    BodyField("purposes", "purposes"),
                    BodyField("data", "data"),
                ),
                "lifecycle.Collected",
                "collection",
            ),
            EventKind(
                USED,
                (BodyField("categories", "categories"), BodyField("purpose", "purpose")),
                "lifecycle.Used",
                "use",
            ),
            EventKind(
                SHARED,
                (
                    BodyField("categories", "categories"),
                    BodyField("purpose", "purpose"),
                    BodyField("recipient", "party"),
                ),
                "lifecycle.Shared",
                "use",
            ),
            EventKind(
                DELETION_REQUESTED,
                (
                    BodyField("categories", "categories_or_all"),
                    BodyField("request_id", "text"),
                ),
                "lifecycle.DeletionRequested",
                "erasure",
                # the key versions the request ends: see streams.publisher
                ("key_versions_ended",),
            ),
            EventKind(
                CONSENT_CHANGED,
                (BodyField("granted", "flag"), BodyField("purpose", "purpose")),
                "lifecycle.ConsentChanged",
                "consent",
            ),
        )
    }
)
"""Every kind, by name, in the contract's order."""

KIND_NAMES: Final = tuple(KINDS)
"""The kinds' names, in the contract's order."""

RETENTION_SWEEP: Final = "retention_sweep"
"""The kind of a ledger record that no event caused: a retention sweep's shredding."""

DEAD_LETTER_REDRIVEN: Final = "dead_letter_redriven"
"""The kind of a ledger record of a dead letter sent back to ``customer.events``: who sent it
and which, never its content."""


def judged_as(kind: str) -> Judgement | None:
    """How events of ``kind`` are judged (None: not an event kind, e.g. a ledger record's
    ``retention_sweep``)."""
    found = KINDS.get(kind)
    return None if found is None else found.judged_as


__all__ = [
    "COLLECTED",
    "CONSENT_CHANGED",
    "DEAD_LETTER_REDRIVEN",
    "DELETION_REQUESTED",
    "KINDS",
    "KIND_NAMES",
    "RETENTION_SWEEP",
    "SHARED",
    "USED",
    "BodyField",
    "EventKind",
    "Form",
    "Judgement",
    "judged_as",
]
