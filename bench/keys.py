"""keys: the key store at 1,000,000 subjects x 3 personal categories (SQLite, the default).

Measured in a fresh helper process (``bench.roles keys``), as a publisher uses the store:

* data-key lookup on a cache miss (``encryption_keys`` for one pair no process has asked for,
  on the cold cache): p99; baseline: the same row read with a plain primary-key ``SELECT``
  through the driver.
* cache hit ratio under Zipf traffic (subjects drawn with the traffic's skew, a category
  each, in the publisher's chunks) once the cache was filled from the store
  (:meth:`~streams.keys.EnvelopeKeyStore.warm`, what ``LIFECYCLE_KEY_CACHE_WARM=1`` does at
  start; its duration is noted); baseline: the best a cache filled only by lookups could do on
  the same lookups (1 - first-time lookups).
* resident memory of the process with every key of the store cached; baseline: the same
  process with the store open, cache empty.

The populated store is kept in ``bench/results/cache/`` (it takes a while to write) and reused
by later runs of the same size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.base import Row, Scale, Target
from bench.environment import REPO, BenchEnv, percentile, process_rss_mb
from bench.workload import Zipf
from core.db import make_engine
from streams.keys import SqlKeyStore, load_master_key

NAME = "keys"
CATEGORIES = ("name", "email", "address")
CACHE = Path(__file__).resolve().parent / "results" / "cache"
CHUNK = 2_000  # lookups per encryption_keys call, as the publisher's chunks
MISS_BUDGET = 20.0  # seconds of miss probes at most


def run(env: BenchEnv, scale: Scale) -> list[Row]:
    subjects = scale.pick(1_000_000, 5_000)
    folder = populated_store(subjects, CACHE if not scale.tiny else env.folder(NAME))
    command = [
        sys.executable, "-m", "bench.roles", "keys",
        "--db", str(folder / "lifecycle.sqlite"),
        "--master-key", str(folder / "master.key"),
        "--subjects", str(subjects),
        "--lookups", str(scale.pick(200_000, 20_000)),
        "--misses", str(scale.pick(500, 50)),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, check=False, timeout=900,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    results = [line for line in done.stdout.decode().splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not results:
        raise RuntimeError(f"keys probe failed ({done.returncode}): {done.stderr.decode()[-3000:]}")
    found: dict[str, Any] = json.loads(results[-1][7:])
    scope = f"{subjects:,} subjects x {len(CATEGORIES)}"
    return [
        Row(
            NAME,
            f"data-key lookup on a cache miss, p99 ({scope})",
            "ms",
            found["miss_p99_ms"],
            found["select_p99_ms"],
            "plain primary-key SELECT of the same row, p99",
            Target("at_most", 1.0),
            {k: found[k] for k in ("miss_p50_ms", "miss_probes", "select_p50_ms")},
        ),
        Row(
            NAME,
            "cache hit ratio under Zipf traffic, cache warmed from the store",
            "%",
            found["hit_ratio"] * 100,
            found["best_ratio"] * 100,
            "best a cache filled only by lookups could do (1 - first-time lookups)",
            Target("at_least", 99.0),
            {
                k: found[k]
                for k in ("lookups_measured", "keys_warmed", "warm_seconds", "cache_size")
            },
        ),
        Row(
            NAME,
            "process RSS with every key cached",
            "MB",
            found["rss_full_mb"],
            found["rss_open_mb"],
            "the same process with the store open, cache empty",
            Target("at_most", 500),
            {k: found[k] for k in ("keys_warmed", "cache_keys", "bytes_per_key")},
        ),
    ]


def populated_store(subjects: int, parent: Path) -> Path:
    """A SQLite key store holding a live key for every subject and category (made once)."""
    folder = parent / f"keys-{subjects}"
    done = folder / "complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("lifecycle.sqlite*"):
        stale.unlink()
    master = load_master_key(folder / "master.key")
    engine = make_engine(f"sqlite:///{folder / 'lifecycle.sqlite'}")
    store = SqlKeyStore(engine, master, cache_size=1)
    # Written straight in, wrapped by the store itself: creating 3,000,000 keys through
    # encryption_keys() would take many minutes (each call first looks the pairs up).
    refs = sorted(store.subject_ref(subject_id(i)) for i in range(subjects))
    step = 50_000
    for start in range(0, len(refs), step):
        rows = [
            (
                ref,
                category,
                1,
                store._wrap(AESGCM.generate_key(256), store.key_label(ref, category, 1)),
            )
            for ref in refs[start : start + step]
            for category in CATEGORIES
        ]
        store._insert_keys(rows)
    engine.dispose()
    done.write_text(f"{subjects * len(CATEGORIES)} keys\n")
    return folder


def subject_id(index: int) -> str:
    return f"C-{100000 + index}"


def probe(args: argparse.Namespace) -> dict[str, Any]:
    """The measurements, in the helper process (see the module docstring)."""
    store = SqlKeyStore(
        make_engine(f"sqlite:///{args.db}"), load_master_key(Path(args.master_key), create=False)
    )
    rss_open = process_rss_mb()
    rng = random.Random(17)
    # misses first, on the cold cache: pairs no lookup has asked for
    miss_times: list[float] = []
    select_times: list[float] = []
    plain = sqlite3.connect(args.db)
    deadline = time.monotonic() + MISS_BUDGET
    for slot in rng.sample(range(args.subjects * len(CATEGORIES)), args.misses):
        if time.monotonic() > deadline:
            break
        ref = store.subject_ref(subject_id(slot // len(CATEGORIES)))
        category = CATEGORIES[slot % len(CATEGORIES)]
        began = time.perf_counter()
        plain.execute(
            "SELECT version, wrapped_key FROM data_keys WHERE subject_ref = ? AND category = ?",
            (ref, category),
        ).fetchall()
        select_times.append(time.perf_counter() - began)
        began = time.perf_counter()
        store.encryption_keys([(ref, category)])
        miss_times.append(time.perf_counter() - began)
    plain.close()
    # then the cache filled from the store, as LIFECYCLE_KEY_CACHE_WARM=1 does at start
    began = time.perf_counter()
    warmed = store.warm()
    warm_seconds = time.perf_counter() - began
    rss_full = process_rss_mb()
    zipf = Zipf(args.subjects)
    seen = bytearray(args.subjects * len(CATEGORIES))
    hits_before, misses_before = store.cache_hits, store.cache_misses
    first_time = 0
    for start in range(0, args.lookups, CHUNK):
        pairs = []
        for _ in range(min(CHUNK, args.lookups - start)):
            index, drawn = zipf.draw(), rng.randrange(len(CATEGORIES))
            slot = index * len(CATEGORIES) + drawn
            first_time += seen[slot] == 0
            seen[slot] = 1
            pairs.append((store.subject_ref(subject_id(index)), CATEGORIES[drawn]))
        store.encryption_keys(pairs)
    hits = store.cache_hits - hits_before
    measured = hits + store.cache_misses - misses_before
    return {
        "miss_p99_ms": percentile(miss_times, 0.99) * 1000,
        "miss_p50_ms": percentile(miss_times, 0.5) * 1000,
        "miss_probes": len(miss_times),
        "select_p99_ms": percentile(select_times, 0.99) * 1000,
        "select_p50_ms": percentile(select_times, 0.5) * 1000,
        "hit_ratio": hits / measured,
        "best_ratio": 1 - first_time / measured,
        "lookups_measured": measured,
        "keys_warmed": warmed,
        "warm_seconds": round(warm_seconds, 1),
        "cache_keys": len(store._cache),
        "cache_size": store._cache.max_subjects,
        "rss_open_mb": rss_open,
        "rss_full_mb": rss_full,
        "bytes_per_key": round((rss_full - rss_open) * 1024 * 1024 / max(warmed, 1)),
    }
