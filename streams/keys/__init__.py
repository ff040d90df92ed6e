"""Envelope encryption for personal data: a master key wraps one data key per subject and
category.

* The **master key** (:mod:`streams.keys.master`) lives in ``LIFECYCLE_MASTER_KEY_FILE``.
* Each (``subject_ref``, ``category``) has numbered AES-256-GCM **data key** versions, stored
  wrapped under the master key (:mod:`streams.keys.wrapping`); several may be live at once. The
  newest version, when it is live, is the *current* one: new values are encrypted under it.
  Shredding destroys a version for good; a later collection gets a newer version.
* ``rotate`` ends a pair's current version without destroying it (an erasure request does, when
  it is published: values after it get a newer version), and ``isolated_keys`` makes a version
  no other value shares (for a collection the policy will refuse). Both reserve a version
  number above the last one without a key (:data:`SKIPPED`), so the version they end or set
  apart never becomes current; ``shred_versions`` destroys exactly the versions it is given.
* ``subject_ref`` is HMAC-SHA256 of ``subject_id`` under a pseudonym key kept (wrapped) in the
  store, so it is stable across master-key rotations (:mod:`streams.keys.rotation`).
* A wrong master key is detected at open through a key-check value, never by garbage output.

:class:`SqlKeyStore` keeps keys in any SQLAlchemy database; :class:`MemoryKeyStore` keeps them
in a dict (unit tests). Both share the wrapping and the bounded cache of unwrapped keys
(:mod:`streams.keys.cache`), which ``warm`` can fill from the store ahead of the traffic.
"""

from __future__ import annotations

from streams.keys.base import (
    IDENTITY_CATEGORY,
    SKIPPED,
    DataKey,
    KeyRecord,
    KeyStore,
    VersionRef,
    Versions,
)
from streams.keys.master import load_master_key
from streams.keys.memory import MemoryKeyStore
from streams.keys.sql import SqlKeyStore, open_keystore
from streams.keys.tables import data_keys
from streams.keys.wrapping import DEFAULT_CACHE_SIZE, EnvelopeKeyStore

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "IDENTITY_CATEGORY",
    "SKIPPED",
    "DataKey",
    "EnvelopeKeyStore",
    "KeyRecord",
    "KeyStore",
    "MemoryKeyStore",
    "SqlKeyStore",
    "VersionRef",
    "Versions",
    "data_keys",
    "load_master_key",
    "open_keystore",
]
