"""Keys in a dict: for unit tests of pure logic, never for data that must survive."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from streams.keys.base import SKIPPED, KeyRecord, Shredding, VersionRef, Versions
from streams.keys.wrapping import EnvelopeKeyStore, live_chunks


class MemoryKeyStore(EnvelopeKeyStore):
    """Keys in a dict: for unit tests of pure logic, never for data that must survive."""

    def __init__(self, master_key: bytes | None = None, **kwargs: Any) -> None:
        self._meta: dict[str, bytes] = {}
        self._rows: dict[tuple[str, str, int], list[object]] = {}
        super().__init__(master_key or AESGCM.generate_key(256), **kwargs)

    def _get_meta(self, name: str) -> bytes | None:
        return self._meta.get(name)

    def _put_meta_if_absent(self, name: str, value: bytes) -> bytes:
        return self._meta.setdefault(name, value)

    def _load_current(
        self, pairs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[int, bytes | None]]:
        out: dict[tuple[str, str], tuple[int, bytes | None]] = {}
        for (ref, cat, version), row in self._rows.items():
            if (ref, cat) in pairs and version > out.get((ref, cat), (0, None))[0]:
                out[(ref, cat)] = (version, row[0])  # type: ignore[assignment]
        return out

    def _insert_keys(self, rows: Sequence[tuple[str, str, int, bytes]]) -> None:
        for ref, cat, version, wrapped in rows:
            self._rows.setdefault((ref, cat, version), [wrapped, datetime.now(UTC), None, None])

    def _insert_versions(self, rows: Sequence[tuple[str, str, int, bytes | None]]) -> bool:
        if any(row[:3] in self._rows for row in rows):
            return False
        now = datetime.now(UTC)
        for ref, cat, version, wrapped in rows:
            skipped = wrapped is None
            self._rows[(ref, cat, version)] = [
                wrapped,
                now,
                now if skipped else None,
                SKIPPED if skipped else None,
            ]
        return True

    def _load_wrapped(self, subject_ref: str, category: str, version: int) -> bytes | None:
        row = self._rows.get((subject_ref, category, version))
        return None if row is None else row[0]  # type: ignore[return-value]

    def _load_versions(self, versions: Sequence[VersionRef]) -> dict[VersionRef, bytes | None]:
        return {
            ref: self._rows[ref][0]  # type: ignore[misc]
            for ref in versions
            if ref in self._rows
        }

    def _destroy_versions(
        self, subject_ref: str, selection: Mapping[str, Versions], reason: str
    ) -> dict[str, list[int]]:
        destroyed: dict[str, list[int]] = {}
        for (ref, cat, version), row in sorted(self._rows.items()):
            chosen = ref == subject_ref and cat in selection and version in selection[cat]
            if chosen and row[0] is not None:
                row[0], row[2], row[3] = None, datetime.now(UTC), reason
                destroyed.setdefault(cat, []).append(version)
        return destroyed

    def _destroy(self, shredding: Shredding) -> list[str]:
        categories, before = shredding.categories, shredding.created_before
        wanted = None if categories is None else set(categories)
        shredded = set()
        for (ref, cat, _), row in self._rows.items():
            if before is not None and cast(datetime, row[1]) >= before:
                continue
            mine = ref == shredding.subject_ref and (wanted is None or cat in wanted)
            if mine and row[0] is not None:
                row[0], row[2], row[3] = None, datetime.now(UTC), shredding.reason
                shredded.add(cat)
        return sorted(shredded)

    def _iter_live(self, chunk: int) -> Iterable[list[tuple[str, str, int, bytes]]]:
        rows = ((*key, row[0]) for key, row in sorted(self._rows.items()))
        return live_chunks(rows, chunk)  # type: ignore[arg-type]

    def keys_of(self, subject_ref: str) -> list[KeyRecord]:
        return [
            KeyRecord(ref, cat, version, row[1], row[2], row[3])  # type: ignore[arg-type]
            for (ref, cat, version), row in sorted(self._rows.items())
            if ref == subject_ref
        ]
