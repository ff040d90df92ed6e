"""``lifecycle events tail``: a debugging consumer of ``customer.events`` and its dead letters.

It prints each record (kind, event_id, subject_ref, categories, purposes, ...) one a line.
Personal values are shown only as ciphertext lengths, unless ``--decrypt`` is given by an
operator who holds the master key and the key store (the same ``LIFECYCLE_*`` settings as the
workers): then values and ``subject_id`` are decrypted, every decryption asking the key store
whether the key still exists, and a value whose key was shredded reads
:data:`streams.envelope.SHREDDED`, unless the pipeline holds that very value re-encrypted (a
refused collection destroyed a key version it shared: the vault's copy is shown, so the tail
agrees with the ledger and the access report on what is held). A record that does not decode
is reported by partition and offset, and the tail carries on.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import click
import orjson
from confluent_kafka import KafkaException, Message

from core.errors import LifecycleError
from core.settings import load_settings
from lifecycle.cli.base import bus, reading_options
from lifecycle.runtime import Runtime
from sinks.vault import Vault
from streams.codec import Codec
from streams.envelope import SHREDDED, decrypt_value
from streams.exceptions import DecodeError, KeyShreddedError, WrongMasterKeyError
from streams.keys import IDENTITY_CATEGORY, KeyStore
from streams.reader import TopicReader
from streams.topics import CUSTOMER_EVENTS, DEAD_LETTERS

WITHHELD = "[withheld]"
"""A value the publisher never sent (the policy forbids collecting it on that channel)."""
NO_SUCH_KEY = "[no such key in this key store]"
"""A value whose key this key store never held (another store, or a foreign producer)."""

_POLL = 0.2


class TailError(LifecycleError):
    """The tail cannot start (the broker cannot say where the topic's partitions are)."""


@dataclass(slots=True)
class TailCounts:
    records: int = 0
    undecodable: int = 0
    decrypted: int = 0
    shredded: int = 0

    def summary(self) -> str:
        return (
            f"read {self.records} records ({self.undecodable} undecodable); "
            f"decrypted {self.decrypted} values, {self.shredded} shredded"
        )


@dataclass(slots=True)
class Opener:
    """Decrypts values for ``--decrypt`` (None: show ciphertext lengths only)."""

    keystore: KeyStore
    counts: TailCounts = field(default_factory=TailCounts)
    vault: Vault | None = None
    """Where held values live (None: values whose key is gone always read shredded)."""

    def open(self, event_id: str, subject_ref: str, value: dict[str, Any]) -> str:
        """The plaintext, or a stated placeholder: never raises for one bad value."""
        if value["key_version"] < 1:
            return WITHHELD
        try:
            plaintext = decrypt_value(self.keystore, event_id, subject_ref, value)
        except KeyShreddedError:
            if not self._key_existed(subject_ref, value["category"], value["key_version"]):
                return NO_SUCH_KEY
            held = self._held_copy(event_id, subject_ref, value["category"])
            if held is not None:
                self.counts.decrypted += 1
                return held
            self.counts.shredded += 1
            return SHREDDED
        except (DecodeError, WrongMasterKeyError) as exc:
            return f"[undecryptable: {exc}]"
        except ValueError as exc:  # a malformed nonce, or bytes that are not UTF-8 text
            return f"[undecryptable: {type(exc).__name__}]"
        self.counts.decrypted += 1
        return plaintext

    def _held_copy(self, event_id: str, subject_ref: str, category: str) -> str | None:
        """This event's value of ``category`` as the pipeline holds it, re-encrypted under
        another key version; None when it holds another event's value, or none."""
        if self.vault is None:
            return None
        for held in self.vault.held(subject_ref):
            if held.category == category and held.event_id == event_id:
                try:
                    return decrypt_value(
                        self.keystore, event_id, subject_ref, held.encrypted_value()
                    )
                except (KeyShreddedError, DecodeError):
                    return None
        return None

    def _key_existed(self, subject_ref: str, category: str, version: int) -> bool:
        return any(
            key.category == category and key.version == version
            for key in self.keystore.keys_of(subject_ref)
        )


# --------------------------------------------------------------------------- showing


Shown = dict[str, Any]


def _position(message: Message) -> Shown:
    return {
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
    }


def _sealed(value: dict[str, Any], event_id: str, ref: str, opener: Opener | None) -> Shown:
    shown: Shown = {
        "category": value["category"],
        "key_version": value["key_version"],
        "ciphertext_bytes": len(value["ciphertext"]),
    }
    if opener is not None:
        shown["value"] = opener.open(event_id, ref, value)
    return shown


def show_event(message: Message, record: dict[str, Any], opener: Opener | None) -> Shown:
    """One decoded ``lifecycle.CustomerEvent`` as printed (values per ``opener``)."""
    event_id, ref = record["event_id"], record["subject_ref"]
    body = dict(record["body"])
    data = body.pop("data", None)
    shown: Shown = {
        **_position(message),
        "event_id": event_id,
        "kind": record["kind"],
        "occurred_at": record["occurred_at"].isoformat(),
        "published_at": record["published_at"].isoformat(),
        "source": record["source"],
        "subject_ref": ref,
        "actor": dict(record["actor"]),
        "authenticated_by": None
        if record.get("auth") is None
        else f"{record['auth']['source']} v{record['auth']['key_version']}",
        "subject": _sealed(record["subject"], event_id, ref, opener),
        **body,
    }
    if data is not None:
        shown["data"] = [_sealed(value, event_id, ref, opener) for value in data]
    return shown


def show_dead_letter(message: Message, opener: Opener | None) -> Shown:
    """One ``customer.events.dlq`` record: where it came from and why; with ``opener`` also
    the original key and value, opened with the quarantine key (see processors/deadletters)."""
    from processors.deadletters import open_dead_letter

    headers: dict[str, str] = {}
    for header in message.headers() or []:
        name, raw = header[0], header[1]
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw or "")
        headers[str(name).removeprefix("lifecycle.")] = text
    sealed = message.value() or b""
    shown: Shown = {**_position(message), "dead_letter": headers, "sealed_bytes": len(sealed)}
    if opener is None:
        return shown
    source = "/".join(
        headers.get(f"source.{part}", "?") for part in ("topic", "partition", "offset")
    )
    try:
        version = int(headers.get("quarantine.key_version", ""))
    except ValueError:
        shown["original"] = "[undecryptable: no quarantine key version header]"
        return shown
    try:
        key, value = open_dead_letter(opener.keystore, sealed, source, version)
    except KeyShreddedError:
        opener.counts.shredded += 1
        shown["original"] = SHREDDED
        return shown
    except WrongMasterKeyError as exc:
        shown["original"] = f"[undecryptable: {exc}]"
        return shown
    except Exception as exc:  # fails authentication, malformed
        shown["original"] = f"[undecryptable: {type(exc).__name__}]"
        return shown
    opener.counts.decrypted += 1
    shown["original"] = {
        "key": key.decode(errors="backslashreplace"),
        "value": value.decode(errors="backslashreplace"),
    }
    return shown


def _text_value(sealed: Shown) -> str:
    if "value" in sealed:
        value = sealed["value"]
        if value in (SHREDDED, WITHHELD, NO_SUCH_KEY) or value.startswith("[undecryptable"):
            return str(value)
        return orjson.dumps(value).decode()  # quoted: a value with a newline stays on its line
    if sealed["key_version"] < 1:
        return WITHHELD
    return f"<{sealed['ciphertext_bytes']} B encrypted, key v{sealed['key_version']}>"


def render(shown: Shown) -> str:
    """The one-line text form of a shown record."""
    where = f"{shown['topic']}/{shown['partition']}@{shown['offset']}"
    if "error" in shown:
        return f"{where} undecodable: {shown['error']}"
    if "dead_letter" in shown:
        letter = shown["dead_letter"]
        parts = [
            where,
            "dead letter of "
            + "/".join(letter.get(f"source.{p}", "?") for p in ("topic", "partition", "offset")),
            f"error={orjson.dumps(letter.get('error', '')).decode()}",
            f"sha256={letter.get('value.sha256', '?')}",
            f"sealed={shown['sealed_bytes']} B",
        ]
        original = shown.get("original")
        if isinstance(original, dict):
            parts += [
                f"original_key={orjson.dumps(original['key']).decode()}",
                f"original_value={orjson.dumps(original['value']).decode()}",
            ]
        elif original is not None:
            parts.append(f"original={original}")
        return " ".join(parts)
    actor = shown["actor"]
    parts = [
        where,
        shown["occurred_at"],
        shown["kind"],
        shown["event_id"],
        f"subject_ref={shown['subject_ref']}",
        f"source={shown['source']}",
        f"actor={actor['id']}({actor['role']})",
    ]
    for name in ("channel", "purposes", "categories", "purpose", "recipient", "request_id"):
        if name in shown:
            value = shown[name]
            if isinstance(value, list):
                value = ",".join(value)
            elif value is None:
                value = "(all)" if name == "categories" else "-"
            parts.append(f"{name}={value}")
    if "granted" in shown:
        parts.append(f"granted={'true' if shown['granted'] else 'false'}")
    parts.append(f"subject_id={_text_value(shown['subject'])}")
    parts += [f"{sealed['category']}={_text_value(sealed)}" for sealed in shown.get("data", [])]
    return " ".join(parts)


def _opened(sealed: Shown) -> bool:
    value = sealed.get("value")
    return isinstance(value, str) and not (
        value in (SHREDDED, WITHHELD, NO_SUCH_KEY) or value.startswith("[undecryptable")
    )


def revealed_in(shown: Shown) -> list[tuple[str, list[str]]]:
    """(pseudonym, categories) whose values ``shown`` reveals in plaintext: an event's
    subject_id and data, or a dead letter's original record (quarantined: its customer is
    unknown, so the quarantine's own name stands for it)."""
    if "dead_letter" in shown:
        from processors.deadletters import QUARANTINE_CATEGORY, QUARANTINE_SUBJECT

        opened = isinstance(shown.get("original"), dict)
        return [(QUARANTINE_SUBJECT, [QUARANTINE_CATEGORY])] if opened else []
    if "subject_ref" not in shown:
        return []
    categories = [s["category"] for s in shown.get("data", []) if _opened(s)]
    if "subject" in shown and _opened(shown["subject"]):
        categories.append(IDENTITY_CATEGORY)
    return [(shown["subject_ref"], categories)] if categories else []


# --------------------------------------------------------------------------- the command


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so a following tail ends cleanly (summary printed)."""
    stop = threading.Event()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def tail_records(
    client_config: dict[str, str],
    codec: Codec,
    emit: Callable[[Shown], None],
    *,
    topic: str = CUSTOMER_EVENTS,
    from_beginning: bool = True,
    follow: bool = False,
    opener: Opener | None = None,
    subject_ref: str | None = None,
    stop: threading.Event | None = None,
    on_start: Callable[[TopicReader], None] = lambda _reader: None,
) -> TailCounts:
    """Emit every record of ``topic`` as shown (see :func:`show_event`,
    :func:`show_dead_letter`); a record that does not decode is emitted as its position and
    the error. ``on_start`` is called once the reader has its start positions (a record
    published after that is read). Returns the counts when the end is reached or
    (``follow``) ``stop`` is set."""
    counts = opener.counts if opener is not None else TailCounts()
    try:
        reader = TopicReader(
            client_config, topic, start="first" if from_beginning else "end", label="tail"
        )
    except KafkaException as exc:
        raise TailError(f"cannot read {topic}: {exc.args[0]}") from exc
    on_start(reader)
    stopped = stop or threading.Event()
    for message in reader.messages(follow=follow, stop=stopped.is_set):
        counts.records += 1
        if topic == DEAD_LETTERS:
            emit(show_dead_letter(message, opener))
            continue
        try:
            record = codec.decode("lifecycle.CustomerEvent", message.value() or b"", topic)
            if subject_ref is not None and record["subject_ref"] != subject_ref:
                continue
            shown = show_event(message, record, opener)
        except (DecodeError, KeyError, TypeError, AttributeError) as exc:
            counts.undecodable += 1
            emit({**_position(message), "error": f"{type(exc).__name__}: {exc}"})
            continue
        emit(shown)
    return counts


@click.group()
def events() -> None:
    """Debugging consumers of customer.events."""


@events.command("tail")
@click.option(
    "--topic",
    type=click.Choice([CUSTOMER_EVENTS, DEAD_LETTERS]),
    default=CUSTOMER_EVENTS,
    show_default=True,
)
@reading_options(follow_help="keep reading new records (until SIGINT/SIGTERM)")
@click.option(
    "--decrypt",
    is_flag=True,
    help="decrypt values and subject_id (needs the master key and key store); a shredded "
    f"value reads {SHREDDED}",
)
@click.option("--subject", "subject_id", metavar="SUBJECT_ID", help="only this customer's events")
@click.option("--json", "as_json", is_flag=True, help="one JSON object a line")
def tail_command(
    topic: str,
    from_beginning: bool,
    follow: bool,
    decrypt: bool,
    subject_id: str | None,
    as_json: bool,
) -> None:
    """Print the records of customer.events (or its dead letters), one a line.

    Without --decrypt, personal values show as ciphertext lengths only.
    """
    if subject_id is not None and topic != CUSTOMER_EVENTS:
        raise click.UsageError(f"--subject reads {CUSTOMER_EVENTS} only")
    stop = _stop_on_signals()
    with bus(load_settings()) as live:
        runtime = Runtime(live)
        opener = Opener(runtime.keystore, vault=Vault(runtime.engine)) if decrypt else None
        subject_ref = runtime.keystore.subject_ref(subject_id) if subject_id else None
        reveals = None
        if decrypt:
            from lifecycle.reveals import RevealLog

            reveals = RevealLog(live, runtime.codec, runtime.policy)

        def emit(shown: Shown) -> None:
            if reveals is not None:  # recorded before it is shown
                for ref, categories in revealed_in(shown):
                    reveals.revealed(ref, categories)
            click.echo(orjson.dumps(shown).decode() if as_json else render(shown))

        def started(reader: TopicReader) -> None:
            if follow:
                where = "the first record" if from_beginning else "the live end"
                click.echo(
                    f"following {topic} ({len(reader.partitions)} partitions) from {where}; "
                    "SIGINT or SIGTERM ends",
                    err=True,
                )

        counts = tail_records(
            live.kafka_consumer_config(),
            runtime.codec,
            emit,
            topic=topic,
            from_beginning=from_beginning or not follow,
            follow=follow,
            opener=opener,
            subject_ref=subject_ref,
            stop=stop,
            on_start=started,
        )
    click.echo(counts.summary(), err=True)


__all__ = ["NO_SUCH_KEY", "WITHHELD", "Opener", "events", "render", "tail_records"]
