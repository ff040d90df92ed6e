"""Shared by the console's tests: users, signing in, reading what was published."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from fastapi.testclient import TestClient

from streams.codec import SingleObjectCodec
from streams.topics import DECISIONS

PASSWORD = "a long enough passphrase"
OFFICER, ANALYST, AUDITOR = "olga", "andy", "aude"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "the page has no CSRF token"
    return found.group(1)


def sign_in(client: TestClient, name: str, password: str = PASSWORD) -> str:
    """Sign ``name`` in; the session's CSRF token."""
    token = csrf_of(client.get("/login").text)
    answer = client.post(
        "/login",
        data={"name": name, "password": password, "csrf_token": token},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/requests").text)


def published_decisions(bootstrap: str) -> list[dict[str, Any]]:
    """Every record on privacy.decisions, decoded (all partitions, to their ends)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "console-test-reader",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    metadata = consumer.list_topics(DECISIONS, timeout=10).topics[DECISIONS]
    partitions = sorted(metadata.partitions)
    consumer.assign([TopicPartition(DECISIONS, p, 0) for p in partitions])
    codec = SingleObjectCodec()
    found: list[dict[str, Any]] = []
    at_end: set[int] = set()
    try:
        while len(at_end) < len(partitions):
            message = consumer.poll(5.0)
            assert message is not None, "privacy.decisions did not answer"
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition() or 0)
                continue
            found.append(codec.decode("lifecycle.Decision", message.value() or b"", DECISIONS))
    finally:
        consumer.close()
    return found
