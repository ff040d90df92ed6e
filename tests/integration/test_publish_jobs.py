"""``lifecycle publish FILE --jobs N``: a file published by several processes keeps each
customer's events in their order on the bus, accounts for every line as one process does
(refused lines by number, in line order, and the same summary and exit status), and gives no
line to two processes."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from core.settings import load_settings
from lifecycle.publish_jobs import PublishJobs
from lifecycle.traffic import Traffic
from streams.codec import SingleObjectCodec
from streams.exceptions import PublishError
from streams.publisher import Share, _owned_lines, plan_shares, share_of
from streams.topics import CUSTOMER_EVENTS

from fixtures.broker import read_topic, run_cli

CODEC = SingleObjectCodec()
CUSTOMERS = [f"C-{20_000 + n}" for n in range(8)]


def _event(customer: str, number: int) -> dict[str, Any]:
    common = {
        "event_id": f"jobs-{customer}-{number:03d}",
        "occurred_at": f"2026-03-01T10:{number % 60:02d}:00+00:00",
        "subject_id": customer,
    }
    if number == 0:
        return {
            **common,
            "kind": "collected",
            "source": "web",
            "actor": {"id": "web-portal", "role": "system"},
            "channel": "web_form",
            "purposes": ["billing"],
            "data": {"name": f"Name of {customer}", "email": f"{customer}@example.org"},
        }
    return {
        **common,
        "kind": "used",
        "source": "billing",
        "actor": {"id": "clerk-1", "role": "billing_clerk"},
        "categories": ["email"],
        "purpose": "billing",
    }


def _document() -> tuple[list[str], dict[int, str]]:
    """The file's lines (customers interleaved, some lines bad) and the refusal expected for
    each bad line number."""
    lines: list[str] = []
    refused: dict[int, str] = {}
    for number in range(12):
        for customer in CUSTOMERS:
            lines.append(json.dumps(_event(customer, number)))
        if number == 3:
            lines.append('{"kind": "used", "subject_id": ')
            refused[len(lines)] = "(line): malformed JSON"
        if number == 5:
            bad = {**_event(CUSTOMERS[1], 99), "categories": ["emial"]}
            lines.append(json.dumps(bad))
            refused[len(lines)] = "categories[0]: unknown category 'emial'"
            lines.append("")  # a blank line: skipped, not refused
        if number == 7:
            missing = {k: v for k, v in _event(CUSTOMERS[2], 98).items() if k != "subject_id"}
            lines.append(json.dumps(missing))
            refused[len(lines)] = "subject_id: is required"
            bad = {**_event(CUSTOMERS[6], 97), "purpose": "sale!"}
            lines.append(json.dumps(bad))
            refused[len(lines)] = "purpose: unknown purpose"
    return lines, refused


def _refusals(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("line ")]


def test_two_jobs_keep_each_customers_order_and_account_for_every_line_as_one_process(
    lifecycle_env: dict[str, str], broker: str, tmp_path: Path
) -> None:
    lines, refused = _document()
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert {share_of(customer, 2) for customer in CUSTOMERS} == {0, 1}  # both jobs publish

    result = run_cli(lifecycle_env, "publish", str(path), "--jobs", "2", timeout=180)
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    shown = _refusals(stderr)
    assert [int(line.split(":")[0].removeprefix("line ")) for line in shown] == sorted(refused)
    for line, message in zip(shown, [refused[n] for n in sorted(refused)], strict=True):
        assert message in line
    good = 12 * len(CUSTOMERS)
    assert f"published {good}, refused {len(refused)}" in stderr

    records = read_topic(broker, CUSTOMER_EVENTS, min_count=good, timeout=60)
    assert len(records) == good
    customer_of = {
        json.loads(line)["event_id"]: json.loads(line)["subject_id"]
        for line in lines
        if line.startswith("{") and line.endswith("}") and "subject_id" in json.loads(line)
    }
    by_ref: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for record in records:
        event = CODEC.decode("lifecycle.CustomerEvent", record.value())
        by_ref[event["subject_ref"]].append(
            (record.partition(), record.offset(), event["event_id"])
        )
    assert len(by_ref) == len(CUSTOMERS)
    for placed in by_ref.values():
        assert len({partition for partition, _, _ in placed}) == 1  # one partition a customer
        on_the_bus = [event_id for _, _, event_id in sorted(placed)]
        customer = customer_of[on_the_bus[0]]
        in_the_file = [f"jobs-{customer}-{number:03d}" for number in range(12)]
        assert on_the_bus == in_the_file

    # one process says exactly the same about the same file
    single = run_cli(lifecycle_env, "publish", str(path), "--jobs", "1")
    assert single.returncode == result.returncode
    assert _refusals(single.stderr.decode()) == shown
    assert f"published {good}, refused {len(refused)}" in single.stderr.decode()


TRICKY = [
    # the customer named with an escape: decoded to be placed
    '{"kind": "used", "subject_id": "C-2000\\u0031", "source": "billing"}',
    # a nested subject_id beside the event's own (two names): decoded
    '{"kind": "used", "subject_id": "C-20001", "actor": {"id": "a", "subject_id": "C-9"}}',
    # only a nested one: the event names no customer of its own (refused wherever it falls)
    '{"kind": "used", "actor": {"id": "a", "subject_id": "C-20003"}}',
    # spaces around the colon, a key that only looks like it, and not JSON at all
    '{"kind": "used", "subject_id"  :  "C-20002"}',
    '{"kind": "used", "x": "subject_id", "subject_id": "C-20004"}',
    '{"subject_id": ',
]


def test_every_line_falls_to_exactly_one_share_and_a_customer_always_to_the_same() -> None:
    lines, _refused = _document()
    lines += TRICKY
    numbered = list(enumerate((line.encode() for line in lines), start=1))
    for jobs in (1, 2, 3, 5):
        for planned in (False, True, "half"):  # half: the file grew after it was planned
            planned_lines = [line for _, line in numbered]
            if planned == "half":
                planned_lines = planned_lines[: len(planned_lines) // 2]
            shares = (
                plan_shares(planned_lines, jobs)
                if planned
                else [Share(index, jobs) for index in range(jobs)]
            )
            owners: dict[int, list[int]] = defaultdict(list)
            for share in shares:
                for number, _value in _owned_lines(numbered, share):
                    owners[number].append(share.index)
            assert sorted(owners) == [n for n, line in numbered if line.strip()], jobs
            assert all(len(held) == 1 for held in owners.values()), jobs
            of_customer: dict[str, set[int]] = defaultdict(set)
            for number, line in numbered:
                try:
                    value: Any = json.loads(line)
                except ValueError:
                    continue
                if isinstance(value, dict) and isinstance(value.get("subject_id"), str):
                    of_customer[value["subject_id"]].update(owners[number])
                    if not planned:
                        assert owners[number] == [share_of(value["subject_id"], jobs)]
            assert all(len(held) == 1 for held in of_customer.values()), (jobs, planned)


def test_a_plan_balances_skewed_traffic_between_the_jobs() -> None:
    # a few customers send much of the traffic (Zipf): split by key alone, one job gets more
    lines = [orjson.dumps(event) for event in Traffic(10_000, seed=7).events(30_000)]
    numbered = list(enumerate(lines, start=1))
    for jobs in (2, 3):
        sizes = [len(list(_owned_lines(numbered, share))) for share in plan_shares(lines, jobs)]
        assert sum(sizes) == len(lines)
        assert max(sizes) <= 1.02 * len(lines) / jobs, sizes


def _end_abruptly(_runtime: object) -> None:
    os._exit(3)  # a job killed while it opens (spawned jobs import this module to call it)


def test_a_job_that_ends_abruptly_is_a_publish_error_not_a_hang(
    lifecycle_env: dict[str, str], broker: str
) -> None:
    settings = load_settings(lifecycle_env)
    with pytest.raises(PublishError, match="a publishing job ended abruptly while opening"):
        PublishJobs(settings, 2, credentials=_end_abruptly)  # type: ignore[arg-type]
