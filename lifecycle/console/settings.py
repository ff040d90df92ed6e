"""The console's own settings, read from the environment beside the pipeline's
(:mod:`core.settings`): where its session key lives, how long a session lasts, when a name
is locked after failed sign-ins, and whether cookies are sent over TLS only."""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigurationError
from core.secretfiles import create_secret_file
from core.settings import Settings, switch

SESSION_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    session_key_file: Path
    """Signs the session cookies (``LIFECYCLE_CONSOLE_SESSION_KEY_FILE``; created, mode 0600,
    when absent). Every console replica behind one address needs the same file."""
    session_minutes: int = 30
    """A session ends this long after the user's last request
    (``LIFECYCLE_CONSOLE_SESSION_MINUTES``)."""
    session_max_hours: int = 12
    """...and this long after signing in, whatever happens
    (``LIFECYCLE_CONSOLE_SESSION_MAX_HOURS``)."""
    lockout_failures: int = 5
    """Failed sign-ins in a row that lock a name (``LIFECYCLE_CONSOLE_LOCKOUT_FAILURES``)."""
    lockout_minutes: int = 15
    """How long the name stays locked (``LIFECYCLE_CONSOLE_LOCKOUT_MINUTES``)."""
    secure_cookies: bool = False
    """Send the session cookie over HTTPS only (``LIFECYCLE_CONSOLE_SECURE_COOKIES``): set it
    wherever the console is reached through TLS, which is everywhere but a developer's
    loopback."""

    def session_key(self) -> str:
        """The session signing key (hex), created on first use."""
        path = self.session_key_file
        if not path.exists():
            create_secret_file(path, secrets.token_hex(SESSION_KEY_BYTES).encode() + b"\n")
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigurationError(
                f"console session key file {path} is readable by others "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
            )
        key = path.read_text().strip()
        if len(key) < 32:
            raise ConfigurationError(f"console session key file {path} holds too short a key")
        return key


def load_console_settings(
    settings: Settings, environ: dict[str, str] | None = None
) -> ConsoleSettings:
    env = dict(os.environ if environ is None else environ)
    key_file = env.get("LIFECYCLE_CONSOLE_SESSION_KEY_FILE") or str(
        settings.data_dir / "console-session.key"
    )
    return ConsoleSettings(
        session_key_file=Path(key_file),
        session_minutes=_whole(env, "LIFECYCLE_CONSOLE_SESSION_MINUTES", 30),
        session_max_hours=_whole(env, "LIFECYCLE_CONSOLE_SESSION_MAX_HOURS", 12),
        lockout_failures=_whole(env, "LIFECYCLE_CONSOLE_LOCKOUT_FAILURES", 5),
        lockout_minutes=_whole(env, "LIFECYCLE_CONSOLE_LOCKOUT_MINUTES", 15),
        secure_cookies=switch(env, "LIFECYCLE_CONSOLE_SECURE_COOKIES"),
    )


def _whole(env: dict[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be a whole number, got {raw!r}") from exc
    if value < 1:
        raise ConfigurationError(f"{name} must be at least 1, got {value}")
    return value
