"""What a stage needs opened before it runs: the settings, the clock, the database engine, the
key store, the codec and the policy book.

The application opens them once per process (:class:`lifecycle.runtime.Runtime`); a stage
only reads them, so it asks for this shape rather than for the application's class.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import Engine

from core.clock import Clock
from core.settings import Settings
from processors.policy import PolicyBook
from streams.codec import Codec
from streams.keys import KeyStore


class Resources(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def keystore(self) -> KeyStore: ...

    @property
    def codec(self) -> Codec: ...

    @property
    def policy(self) -> PolicyBook: ...
