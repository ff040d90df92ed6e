"""What every process of the pipeline opens once at start: settings, database, keys, codec,
policy. Opening it is where a wrong master key or an invalid policy file stops a process,
with a clear message, before it touches any topic."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from core.clock import Clock, SystemClock
from core.db import make_engine
from core.logging import get_logger
from core.settings import Settings
from streams.codec import Codec, make_codec
from streams.exceptions import KeyStoreError
from streams.keys import SqlKeyStore, open_keystore

if TYPE_CHECKING:
    from processors.policy import PolicyBook
    from streams.publisher import Publisher
    from streams.sourceauth import SourceCredentials
    from streams.sources import SourceRegistry

log = get_logger(__name__)


@dataclass
class Runtime:
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    """What time it is wherever time decides something (retention); tests inject their own."""

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.db_url)

    @cached_property
    def keystore(self) -> SqlKeyStore:
        store = open_keystore(
            self.engine,
            self.settings.master_key_file,
            self.settings.previous_master_key_file,
            cache_size=self.settings.key_cache,
        )
        if self.settings.key_cache_warm:
            threading.Thread(
                target=_warm, args=(store,), name="key-cache-warm", daemon=True
            ).start()
        return store

    @cached_property
    def codec(self) -> Codec:
        return make_codec(self.settings.schema_registry_url)

    @cached_property
    def policy(self) -> PolicyBook:
        from processors.policy import load_policies

        return load_policies(self.settings.policy_dir)

    @cached_property
    def sources(self) -> SourceRegistry:
        """The source registry (in the key store's database, secrets under its master key)."""
        from streams.sources import SourceRegistry

        return SourceRegistry(self.engine, self.keystore)

    @cached_property
    def source_credentials(self) -> SourceCredentials | None:
        """The secrets this process publishes with (``LIFECYCLE_SOURCE_SECRET_FILE``); None
        when it has none (its events are then unauthenticated)."""
        from streams.sourceauth import SourceCredentials

        path = self.settings.source_secret_file
        return None if path is None else SourceCredentials.from_file(path)

    def publisher(self, **options: Any) -> Publisher:
        """A publisher onto this process's bus, with its keys, codec and policy vocabulary, the
        policy's screen of collections it will refuse, signing with this process's source
        secrets unless ``credentials`` names others (``options``: see
        :class:`~streams.publisher.Publisher`)."""
        from processors.rules import RefusalScreen
        from streams.publisher import Publisher

        options.setdefault("credentials", self.source_credentials)
        options.setdefault("screen", RefusalScreen(self.policy))
        return Publisher(
            self.settings.kafka_client_config(),
            self.keystore,
            self.codec,
            self.policy.vocabulary(),
            **options,
        )

    def open(self) -> Runtime:
        """Open everything now (fail fast), rather than on first use. The policy comes first:
        an invalid policy file stops the process before a master key or database is created."""
        _ = self.policy, self.keystore, self.codec
        return self


def _warm(store: SqlKeyStore) -> None:
    began = time.monotonic()
    try:
        cached = store.warm()
    except KeyStoreError as exc:  # lookups read the store as usual
        log.warning("keys.warm_failed", error=str(exc))
        return
    log.info("keys.warmed", keys=cached, seconds=round(time.monotonic() - began, 1))
