"""Errors of the bus: encoding, decoding, keys, publishing."""

from __future__ import annotations

from core.errors import LifecycleError


class StreamsError(LifecycleError):
    """Root of the bus's errors."""


class DecodeError(StreamsError):
    """A record on a topic could not be decoded (not Avro, unknown fingerprint, corrupt body)."""


class RegistryUnavailableError(StreamsError):
    """The Schema Registry could not be asked (unreachable, timed out, failing, refusing our
    credentials). Not the record's fault: it must be retried, never dead-lettered or skipped."""


class EncodeError(StreamsError):
    """A record does not match its schema."""


class ValidationError(StreamsError):
    """An input event is not valid; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class KeyStoreError(StreamsError):
    """The key store is unusable (wrong master key, unreadable key file, database error)."""


class WrongMasterKeyError(KeyStoreError):
    """The master key does not open this key store."""


class KeyShreddedError(KeyStoreError):
    """The data key was destroyed (erasure or retention): the value is gone for good."""


class PublishError(StreamsError):
    """The broker did not acknowledge a record."""


class BrokerError(StreamsError):
    """The embedded broker could not be started or reached."""
