"""The input format: each bad line gets an error naming its field, never its value."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import pytest

from streams.events import MAX_VALUE_CHARS, parse_line
from streams.exceptions import ValidationError


@dataclass(frozen=True)
class Vocab:
    categories: frozenset[str] = frozenset({"name", "email", "banking", "credit_card", "web_log"})
    purposes: frozenset[str] = frozenset({"billing", "sale", "transaction_processing"})
    channels: frozenset[str] = frozenset({"web_form", "online_tendering"})
    prohibited_collections: frozenset[tuple[str, str]] = frozenset(
        {("online_tendering", "credit_card")}
    )


BASE = {"source": "web", "subject_id": "C-1", "actor": {"id": "a", "role": "system"}}


def line(**fields: object) -> bytes:
    return orjson.dumps({**BASE, **fields})


def test_a_valid_collection_keeps_values_for_encryption_and_fills_defaults() -> None:
    event = parse_line(
        line(
            kind="collected",
            channel="web_form",
            purposes=["billing"],
            data={"email": "jane@example.org"},
        ),
        Vocab(),
    )
    assert event.data == {"email": "jane@example.org"}
    assert event.event_id and event.occurred_at.tzinfo is not None


def test_card_data_via_online_tendering_is_withheld_not_kept() -> None:
    event = parse_line(
        line(
            kind="collected",
            channel="online_tendering",
            purposes=["transaction_processing"],
            data={"credit_card": "4000 0000 0000 0002", "name": "J"},
        ),
        Vocab(),
    )
    assert event.withheld == ["credit_card"]
    assert "credit_card" not in event.data and event.data == {"name": "J"}


def test_occurred_at_is_read_with_its_zone() -> None:
    event = parse_line(
        line(
            kind="used",
            categories=["email"],
            purpose="billing",
            occurred_at="2026-02-02T09:00:00-04:00",
        ),
        Vocab(),
    )
    assert event.occurred_at == datetime(2026, 2, 2, 13, 0, tzinfo=UTC)


SECRET = "jane.secret@example.org"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"kind": "used", ', "(line)"),
        (b"[1, 2]", "(line)"),
        (line(kind="sold"), "kind"),
        (line(kind="used", categories=["email"], purpose="billing", subject_id=None), "subject_id"),
        (line(kind="used", categories=["email"], purpose="billing", subject_id=""), "subject_id"),
        (line(kind="used", categories=["emial"], purpose="billing"), "categories[0]"),
        (line(kind="used", categories=["email"], purpose="marketting"), "purpose"),
        (line(kind="used", categories="email", purpose="billing"), "categories"),
        (
            line(kind="collected", channel="web_form", purposes=["billing"], data={"email": 42}),
            "data.email",
        ),
        (
            line(
                kind="collected", channel="web_form", purposes=["billing"], data={"emial": SECRET}
            ),
            "data.emial",
        ),
        (
            line(
                kind="collected",
                channel="web_form",
                purposes=["billing"],
                data={"name": "x" * (MAX_VALUE_CHARS + 1)},
            ),
            "data.name",
        ),
        (
            line(
                kind="collected",
                channel="fax_machine",
                purposes=["billing"],
                data={"email": SECRET},
            ),
            "channel",
        ),
        (
            line(
                kind="used",
                categories=["email"],
                purpose="billing",
                occurred_at="2026-02-02T09:00:00",
            ),
            "occurred_at",
        ),
        (
            line(kind="used", categories=["email"], purpose="billing", actor={"id": "a"}),
            "actor.role",
        ),
        (line(kind="consent_changed", purpose="billing", granted="no"), "granted"),
        (line(kind="deletion_requested"), "request_id"),
        (line(kind="used", categories=["email"], purpose="billing", extra=SECRET), "extra"),
        (
            line(kind="used", categories=["email"], purpose="billing", **{SECRET: "x"}),
            "(an unknown field)",
        ),
        (
            line(kind="collected", channel="web_form", purposes=["billing"], data={SECRET: "x"}),
            "data.(an unknown field)",
        ),
    ],
)
def test_bad_lines_name_the_field_and_never_echo_a_value(raw: bytes, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_line(raw, Vocab())
    assert caught.value.field == field
    assert SECRET not in str(caught.value) and "C-1" not in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (line(kind=["used"]), "kind"),
        (
            line(
                kind="used",
                categories=["email"],
                purpose="billing",
                occurred_at="9999-12-31T23:59:59-23:59",
            ),
            "occurred_at",
        ),
        (line(kind="used", categories=["email"], purpose="Odette Example"), "purpose"),
    ],
)
def test_hostile_lines_get_a_field_error_and_no_value_is_repeated(raw: bytes, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_line(raw, Vocab())
    assert caught.value.field == field
    assert "Odette" not in str(caught.value)


def test_personal_text_used_as_a_data_key_is_masked_in_the_error() -> None:
    raw = line(
        kind="collected",
        channel="web_form",
        purposes=["billing"],
        data={"Jane Doe, 1 Main St": "x"},
    )
    with pytest.raises(ValidationError) as caught:
        parse_line(raw, Vocab())
    assert caught.value.field == "data.(an unknown field)"
    assert "unknown category" in caught.value.message
    assert "Jane" not in str(caught.value) and "Main St" not in str(caught.value)
