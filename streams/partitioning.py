"""Which partition a keyed record belongs on: murmur2 of the key bytes, as the publisher, the Java
client and Faust's tables compute it, so that a subject's events and its state meet."""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

from aiokafka.partitioner import murmur2


@functools.lru_cache(maxsize=16_384)
def _key_hash(key: bytes) -> int:
    # aiokafka's murmur2 is pure Python, and a worker needs it twice an event: the intake's
    # home check and the table changelog's partition. Keys repeat (popular customers), so
    # the hash is remembered (the cache's size bounds the memory it takes).
    return int(murmur2(key) & 0x7FFFFFFF)


def home_partition(key: bytes, partitions: int) -> int:
    """The partition a keyed record belongs on: murmur2 of the key bytes, as the publisher,
    the Java client and Faust's tables compute it (so a subject's events and state meet)."""
    return _key_hash(key) % partitions


def key_partitioner(
    key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
) -> int:
    """The Faust producer's partitioner (``producer_partitioner``): the Kafka clients' default,
    murmur2 of the key (through :func:`home_partition`'s remembered hashes); a record without
    a key goes to any available partition."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[_key_hash(key) % len(all_partitions)]
