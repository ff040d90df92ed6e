"""A subject's events, decisions and table changelog meet on one partition: the pipeline's
partitioner must agree with the Kafka clients' default (murmur2 of the key) for every key,
however often it has seen it."""

from __future__ import annotations

import os
import random

from aiokafka.partitioner import DefaultPartitioner

from streams.partitioning import home_partition, key_partitioner


def test_the_partitioner_agrees_with_the_clients_default_for_new_and_repeated_keys() -> None:
    default = DefaultPartitioner()
    rng = random.Random(7)
    keys = [os.urandom(rng.randint(0, 80)) for _ in range(500)]
    keys += [f"{n:064x}".encode() for n in range(500)]  # pseudonym-shaped
    for _ in range(2):  # the second time from the remembered hashes
        for key in keys:
            count = rng.randint(1, 16)
            partitions = list(range(count))
            expected = default(key, partitions, partitions)
            assert key_partitioner(key, partitions, []) == expected
            assert home_partition(key, count) == expected


def test_a_record_without_a_key_goes_to_an_available_partition() -> None:
    chosen = {key_partitioner(None, [0, 1, 2, 3], [2, 3]) for _ in range(200)}
    assert chosen == {2, 3}
    assert key_partitioner(None, [0, 1], []) in (0, 1)
