"""The privacy team's web console (``lifecycle console``): customers' requests on the legal
clock, access reports with audited reveals, refusals, dead letters and the audit ledger.

* :mod:`.app`: the application, its sessions, CSRF protection and sign-in.
* :mod:`.pages_requests`, :mod:`.pages_customer`, :mod:`.pages_audit`: the pages.
* :mod:`.ledger_views`: what the pages read from the ledger (requests on their clock, ...).
* :mod:`.bus`: filing erasures, watching confirmations, listing dead letters.
* :mod:`.users`: the people who sign in (Argon2 hashes, lock after failed sign-ins).
* :mod:`.settings`: the console's own environment settings.
"""

from __future__ import annotations

from lifecycle.console.app import create_app, open_console
from lifecycle.console.settings import ConsoleSettings, load_console_settings

__all__ = ["ConsoleSettings", "create_app", "load_console_settings", "open_console"]
