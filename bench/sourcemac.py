"""``python -m bench.sourcemac``: the per-event cost of authenticating a source, HMAC-SHA256
(what the pipeline uses) against Ed25519 signatures, on records of the sizes the publisher
sends (a collection with three encrypted values, and a use).

Four figures per record, in microseconds of CPU (the median of ``--repeat`` runs of
``--number`` calls each, with :mod:`timeit` on the process's CPU clock): the publisher's side
(:func:`streams.sourceauth.seal`, or an Ed25519 signature over the same bytes) and the
worker's (:func:`streams.sourceauth.signed_part` plus the MAC's check, or the signature's
verification); and, for scale, the Avro encoding of the record. With Ed25519 workers would
hold only public keys; with HMAC they hold every source's secret (see docs/security.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import timeit
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.kinds import KINDS
from streams.codec import SingleObjectCodec
from streams.sourceauth import DOMAIN, SourceCredential, mac_matches, new_secret, seal, signed_part


def _sealed(category: str, plaintext_bytes: int) -> dict[str, Any]:
    return {
        "category": category,
        "key_version": 1,
        "nonce": os.urandom(12),
        "ciphertext": os.urandom(plaintext_bytes + 16),  # the GCM tag
    }


def records() -> dict[str, dict[str, Any]]:
    """A collection and a use, as the publisher encodes them (``auth`` still empty)."""
    now = datetime.now(UTC)
    common = {
        "occurred_at": now,
        "published_at": now,
        "source": "billing",
        "subject_ref": os.urandom(32).hex(),
        "subject": _sealed("subject_id", 9),
        "actor": {"id": "clerk-7", "role": "billing_clerk"},
        "auth": None,
    }
    collected = {
        "channel": "web_form",
        "purposes": ["service_provision", "billing", "account_notices"],
        "data": [_sealed("name", 16), _sealed("email", 30), _sealed("address", 34)],
    }
    used = {"categories": ["name", "address"], "purpose": "billing"}
    return {
        "collected": {
            **common,
            "event_id": "ev-000000001",
            "kind": "collected",
            "body": (KINDS["collected"].body_record, collected),
        },
        "used": {
            **common,
            "event_id": "ev-000000002",
            "kind": "used",
            "body": (KINDS["used"].body_record, used),
        },
    }


def _time(call: Any, number: int, repeat: int) -> float:
    # CPU time of this process, not wall time: the figure holds on a machine shared with
    # other work (a descheduled process is not charged)
    runs = timeit.repeat(call, number=number, repeat=repeat, timer=time.process_time)
    return statistics.median(runs) / number * 1e6


def measure_one(record: dict[str, Any], number: int, repeat: int) -> tuple[int, dict[str, float]]:
    """(the sealed record's size, its figures) for one record."""
    codec = SingleObjectCodec()
    credential = SourceCredential("billing", 1, new_secret())
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    unsigned = codec.encode("lifecycle.CustomerEvent", record)
    value = seal(unsigned, credential)
    auth = codec.decode("lifecycle.CustomerEvent", value)["auth"]
    signed = signed_part(value, auth)
    assert signed is not None and mac_matches(credential.secret, signed, auth["mac"])
    message = DOMAIN + bytes(signed)
    signature = private.sign(message)

    def check() -> bool:
        part = signed_part(value, auth)
        return part is not None and mac_matches(credential.secret, part, auth["mac"])

    return len(value), {
        "hmac_publish_us": _time(lambda: seal(unsigned, credential), number, repeat),
        "hmac_check_us": _time(check, number, repeat),
        "ed25519_sign_us": _time(lambda: private.sign(message), number, repeat),
        "ed25519_verify_us": _time(lambda: public.verify(signature, message), number, repeat),
        "encode_us": _time(lambda: codec.encode("lifecycle.CustomerEvent", record), number, repeat),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sourcemac")
    parser.add_argument("--number", type=int, default=20_000, help="calls per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs (the median counts)")
    args = parser.parse_args(argv)
    print(
        f"{'record':<10} {'bytes':>5}  {'HMAC publish':>12} {'HMAC check':>10}  "
        f"{'Ed25519 sign':>12} {'Ed25519 verify':>14}  {'Avro encode':>11}   (us an event)"
    )
    for kind, record in records().items():
        size, f = measure_one(record, args.number, args.repeat)
        print(
            f"{kind:<10} {size:>5}  {f['hmac_publish_us']:>12.1f} {f['hmac_check_us']:>10.1f}  "
            f"{f['ed25519_sign_us']:>12.1f} {f['ed25519_verify_us']:>14.1f}  "
            f"{f['encode_us']:>11.1f}"
        )


if __name__ == "__main__":
    main()
