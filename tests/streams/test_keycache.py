"""The packed key cache (streams/keys/cache.py) and warming it from a real key store."""

from __future__ import annotations

import time
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path

import pytest

from core.db import make_engine
from streams.keys import SqlKeyStore, load_master_key
from streams.keys.cache import KeyCache

REF_A, REF_B, REF_C = "a" * 64, "b" * 64, "c" * 64


def test_each_category_keeps_its_current_version_and_older_ones_stay_readable() -> None:
    cache = KeyCache(10)
    cache.put_current(REF_A, "name", 1, b"1" * 32)
    cache.put_current(REF_A, "email", 1, b"2" * 32)
    cache.put_current(REF_A, "name", 2, b"3" * 32)  # a new version after a shred
    assert cache.current(REF_A, "name") == (2, b"3" * 32)
    assert cache.current(REF_A, "email") == (1, b"2" * 32)
    assert cache.current(REF_B, "name") is None
    assert cache.get(REF_A, "name", 1) is None  # replaced, never read for a decryption
    cache.put(REF_A, "name", 1, b"1" * 32)  # read for a decryption
    assert cache.get(REF_A, "name", 1) == b"1" * 32
    assert cache.get(REF_A, "name", 2) == b"3" * 32
    assert len(cache) == 3


def test_forgetting_drops_the_categories_asked_or_every_key_of_the_customer() -> None:
    cache = KeyCache(10)
    for category in ("name", "email", "address"):
        cache.put_current(REF_A, category, 1, category.encode().ljust(32, b"."))
        cache.put_current(REF_B, category, 1, category.encode().ljust(32, b"."))
    cache.put(REF_A, "name", 0, b"0" * 32)
    cache.forget(REF_A, ["name", "address"])
    assert cache.current(REF_A, "name") is None and cache.get(REF_A, "name", 0) is None
    assert cache.current(REF_A, "email") == (1, b"email".ljust(32, b"."))
    cache.forget(REF_B)
    assert REF_B not in cache and cache.current(REF_B, "email") is None
    assert len(cache) == 1


def test_a_full_cache_drops_the_customers_cached_first() -> None:
    cache = KeyCache(10)
    refs = [f"{n:064x}" for n in range(25)]
    for ref in refs:
        cache.put_current(ref, "name", 1, b"k" * 32)
    assert cache.subjects <= 10
    assert refs[-1] in cache and refs[0] not in cache


def test_a_cache_for_nobody_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one customer"):
        KeyCache(0)


def open_store(folder: Path, **kwargs: object) -> SqlKeyStore:
    return SqlKeyStore(
        make_engine(f"sqlite:///{folder / 'keys.sqlite'}"),
        load_master_key(folder / "master.key"),
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_warmed_store_answers_every_live_key_from_its_cache(tmp_path: Path) -> None:
    writer = open_store(tmp_path)
    refs = [writer.subject_ref(f"C-{n}") for n in range(300)]
    pairs = [(ref, category) for ref in refs for category in ("name", "email", "address")]
    written = writer.encryption_keys(pairs)
    writer.shred(refs[0], None, "erasure")  # no live key: not warmed
    writer.shred(refs[1], ["email"], "erasure")
    renewed = writer.encryption_keys([(refs[1], "email")])  # a new version after the shred

    reader = open_store(tmp_path)
    assert reader.warm() == 3 * 299
    again = reader.encryption_keys(pairs[3:])  # every pair but refs[0]'s
    assert (reader.cache_hits, reader.cache_misses) == (3 * 299, 0)
    assert again[(refs[1], "email")] == renewed[(refs[1], "email")]
    assert again[(refs[1], "email")].version == 2
    assert again[(refs[5], "name")].secret == written[(refs[5], "name")].secret
    assert reader._cache.current(refs[0], "name") is None


def test_warming_stops_when_the_cache_is_full(tmp_path: Path) -> None:
    writer = open_store(tmp_path)
    refs = [writer.subject_ref(f"C-{n}") for n in range(50)]
    writer.encryption_keys([(ref, category) for ref in refs for category in ("name", "email")])
    reader = open_store(tmp_path, cache_size=20)
    assert reader.warm() == 40
    assert reader._cache.subjects == 20


def test_a_customer_forgotten_while_warming_is_not_cached_from_what_was_read_before(
    tmp_path: Path,
) -> None:
    writer = open_store(tmp_path)
    refs = [writer.subject_ref(f"C-{n}") for n in range(10)]
    writer.encryption_keys([(ref, "name") for ref in refs])

    class Revoked(SqlKeyStore):
        """A revocation of every customer arrives after the keys were read, before caching."""

        def _iter_live(self, chunk: int) -> Iterable[list[tuple[str, str, int, bytes]]]:
            for rows in super()._iter_live(chunk):
                for ref in {row[0] for row in rows}:
                    self.forget(ref)
                yield rows

    reader = Revoked(
        make_engine(f"sqlite:///{tmp_path / 'keys.sqlite'}"),
        load_master_key(tmp_path / "master.key"),
    )
    assert reader.warm() == 0
    assert reader._cache.subjects == 0


def test_a_process_told_to_warm_fills_its_cache_in_the_background(tmp_path: Path) -> None:
    from core.settings import load_settings
    from lifecycle.runtime import Runtime

    env = {"LIFECYCLE_DATA_DIR": str(tmp_path), "LIFECYCLE_KEY_CACHE_WARM": "1"}
    writer = Runtime(load_settings({"LIFECYCLE_DATA_DIR": str(tmp_path)})).keystore
    refs = [writer.subject_ref(f"C-{n}") for n in range(100)]
    writer.encryption_keys([(ref, "email") for ref in refs])

    store = Runtime(load_settings(env)).keystore
    deadline = time.monotonic() + 30
    while store._cache.subjects < len(refs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store._cache.subjects == len(refs)
    store.encryption_keys([(ref, "email") for ref in refs])
    assert (store.cache_hits, store.cache_misses) == (len(refs), 0)


@pytest.mark.parametrize("chunk", [1, 2, 7])
def test_the_store_is_read_in_short_chunks_of_whole_customers(tmp_path: Path, chunk: int) -> None:
    store = open_store(tmp_path)
    refs = [store.subject_ref(f"C-{n}") for n in range(12)]
    store.encryption_keys([(ref, category) for ref in refs for category in ("name", "email")])
    for ref in refs[::3]:  # a second version of name, and of one email
        store.shred(ref, ["name"], "erasure")
        store.encryption_keys([(ref, "name")])
    store.shred(refs[1], None, "erasure")  # nothing live left

    def read(size: int) -> list[list[tuple[str, str, int, bytes]]]:
        return [list(rows) for rows in store._iter_live(size)]

    everything = [row for rows in read(10_000) for row in rows]
    assert len(everything) == 2 * 11
    assert {(ref, version) for ref, cat, version, _ in everything if cat == "name"} == {
        (ref, 2 if n % 3 == 0 else 1) for n, ref in enumerate(refs) if n != 1
    }
    chunks = read(chunk)
    assert [row for rows in chunks for row in rows] == everything
    for earlier, later in pairwise(chunks):  # no customer split in two
        assert earlier[-1][0] != later[0][0]
