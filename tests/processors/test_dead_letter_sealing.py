"""A dead letter opens back into the record it quarantined, and only that: the inverse of the
sealing, for ``lifecycle deadletters redrive``."""

from __future__ import annotations

import pytest

from processors.deadletters import (
    QUARANTINE_CATEGORY,
    QUARANTINE_SUBJECT,
    REDRIVE_OF,
    dead_letter,
    open_dead_letter,
)
from processors.intake import redrive_header
from streams.exceptions import DecodeError, KeyShreddedError
from streams.keys import MemoryKeyStore

KEY, VALUE = b"ab" * 32, b"\xc3\x01 an event that did not decode"


def seal(keys: MemoryKeyStore, redrive_of: bytes | None = None) -> tuple[bytes, dict[str, bytes]]:
    letter = dead_letter(
        keys,
        topic="customer.events",
        partition=2,
        offset=17,
        key=KEY,
        value=VALUE,
        error="unknown schema fingerprint 00",
        redrive_of=redrive_of,
    )
    return letter.value, dict(letter.headers)


def test_a_dead_letter_opens_into_its_key_and_value() -> None:
    keys = MemoryKeyStore()
    sealed, headers = seal(keys)
    assert KEY not in sealed and VALUE not in sealed
    version = int(headers["lifecycle.quarantine.key_version"])
    assert open_dead_letter(keys, sealed, "customer.events/2/17", version) == (KEY, VALUE)
    assert REDRIVE_OF not in headers


def test_a_dead_letter_opened_as_another_position_or_altered_fails() -> None:
    keys = MemoryKeyStore()
    sealed, headers = seal(keys)
    version = int(headers["lifecycle.quarantine.key_version"])
    with pytest.raises(DecodeError, match="fails authentication"):
        open_dead_letter(keys, sealed, "customer.events/2/18", version)
    altered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(DecodeError, match="fails authentication"):
        open_dead_letter(keys, altered, "customer.events/2/17", version)


def test_a_shredded_quarantine_key_leaves_nothing_to_redrive() -> None:
    keys = MemoryKeyStore()
    sealed, headers = seal(keys)
    keys.shred(QUARANTINE_SUBJECT, [QUARANTINE_CATEGORY], "test")
    with pytest.raises(KeyShreddedError):
        open_dead_letter(
            keys, sealed, "customer.events/2/17", int(headers["lifecycle.quarantine.key_version"])
        )


def test_a_redriven_record_that_fails_again_keeps_the_redrive_header() -> None:
    keys = MemoryKeyStore()
    header = redrive_header([("other", b"x"), (REDRIVE_OF, b"customer.events.dlq/0/3")])
    assert header == b"customer.events.dlq/0/3"
    assert redrive_header({REDRIVE_OF: "customer.events.dlq/0/4"}) == b"customer.events.dlq/0/4"
    assert redrive_header(None) is None
    _, headers = seal(keys, header)
    assert headers[REDRIVE_OF] == b"customer.events.dlq/0/3"
