"""``lifecycle sources``: register the systems that publish events, the roles they may assert,
the destructive requests they may file, and their secrets (see docs/security.md).

A secret is printed once, to standard output, as a one-line token for the source's secret file
(``LIFECYCLE_SOURCE_SECRET_FILE``); everything else goes to standard error, and nothing here is
logged. Run these with the key store's settings (``LIFECYCLE_DB_URL``,
``LIFECYCLE_MASTER_KEY_FILE``): secrets are stored wrapped under the master key.
"""

from __future__ import annotations

import re
from datetime import timedelta

import click
import orjson

from core.settings import load_settings
from lifecycle.runtime import Runtime
from streams.exceptions import SourceError
from streams.sources import DEFAULT_GRACE, DESTRUCTIVE_KINDS, parse_destructive

_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType):
    """A period such as ``90s``, ``15m``, ``24h`` or ``7d``."""

    name = "duration"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        match = _DURATION.match(str(value).strip())
        if not match:
            self.fail(f"{value!r} is not a duration like 90s, 15m, 24h or 7d", param, ctx)
        return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def _roles(runtime: Runtime, text: str) -> list[str] | None:
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    if wanted == ["all"]:
        return None
    if not wanted:
        raise click.UsageError("--roles needs at least one role (or all)")
    known = {role for policy in runtime.policy for role in policy.roles}
    unknown = [role for role in wanted if role not in known]
    if unknown:
        raise click.UsageError(
            f"--roles: {unknown[0]!r} is not a role of the policy "
            f"(known: {', '.join(sorted(known))}, or all)"
        )
    return wanted


@click.group()
def sources() -> None:
    """The systems allowed to publish events, and their secrets."""


@sources.command("add")
@click.argument("name")
@click.option(
    "--roles",
    required=True,
    help="roles its events may name as actor, separated by commas (policy roles), or all",
)
@click.option(
    "--destructive",
    default="none",
    show_default=True,
    help="destructive requests it may file, separated by commas: "
    f"{', '.join(DESTRUCTIVE_KINDS)}; or all, or none",
)
def sources_add(name: str, roles: str, destructive: str) -> None:
    """Register source NAME and print its secret token (once: keep it in the source's
    LIFECYCLE_SOURCE_SECRET_FILE, mode 0600)."""
    runtime = Runtime(load_settings())
    try:
        kinds = parse_destructive(destructive)
        credential = runtime.sources.add(name, _roles(runtime, roles), kinds)
    except SourceError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(credential.token())
    click.echo(
        f"registered source {name} (secret version {credential.version}); the line above is "
        "its secret token: put it in the source's LIFECYCLE_SOURCE_SECRET_FILE. It is not "
        "shown again.",
        err=True,
    )


@sources.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON object a source")
@click.option("--all", "include_removed", is_flag=True, help="removed sources too")
def sources_list(as_json: bool, include_removed: bool) -> None:
    """Registered sources: roles, destructive kinds, secret versions (never the secrets)."""
    registered = Runtime(load_settings()).sources.sources(include_removed=include_removed)
    for source in registered:
        versions = [
            {
                "version": v.version,
                "created_at": v.created_at.isoformat(),
                "accepted_until": None if v.expires_at is None else v.expires_at.isoformat(),
            }
            for v in source.versions
        ]
        if as_json:
            record = {
                "name": source.name,
                "roles": source.describe_roles().split(","),
                "destructive": source.describe_destructive().split(","),
                "current_version": source.current_version,
                "versions": versions,
                "created_at": source.created_at.isoformat(),
                "removed_at": None if source.removed_at is None else source.removed_at.isoformat(),
            }
            click.echo(orjson.dumps(record).decode())
            continue
        grace = [
            f"v{v['version']} until {v['accepted_until']}"
            for v in versions
            if v["accepted_until"] is not None and source.removed_at is None
        ]
        line = (
            f"{source.name}: roles {source.describe_roles()}; "
            f"destructive {source.describe_destructive()}; "
            f"secret v{source.current_version or '-'}"
        )
        if grace:
            line += f" (also accepted: {', '.join(grace)})"
        if source.removed_at is not None:
            line += f"; removed {source.removed_at.isoformat()}"
        click.echo(line)
    if not registered:
        click.echo("no sources registered (lifecycle sources add NAME --roles ...)", err=True)


@sources.command("rotate")
@click.argument("name")
@click.option(
    "--grace",
    type=Duration(),
    default=f"{int(DEFAULT_GRACE.total_seconds() // 3600)}h",
    show_default=True,
    help="how long the current secret is still accepted (90s, 15m, 24h, 7d)",
)
def sources_rotate(name: str, grace: timedelta) -> None:
    """Give source NAME a new secret and print its token; the old secret is accepted for the
    grace period, then refused."""
    runtime = Runtime(load_settings())
    try:
        credential = runtime.sources.rotate(name, grace)
    except SourceError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(credential.token())
    click.echo(
        f"source {name}: secret version {credential.version} (the line above, shown once); "
        f"the previous version is accepted for {grace} more, then refused",
        err=True,
    )


@sources.command("remove")
@click.argument("name")
def sources_remove(name: str) -> None:
    """Refuse source NAME's events from now on and destroy its secrets."""
    runtime = Runtime(load_settings())
    try:
        runtime.sources.remove(name)
    except SourceError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(
        f"removed source {name}: workers refuse its events within seconds "
        "(`lifecycle sources add` registers it again, with a new secret)",
        err=True,
    )
