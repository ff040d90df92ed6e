"""Reading one parsed policy document into a :class:`~processors.policy.model.Policy`,
checking it as it goes: every problem found is collected (path inside the file, reason), and
the file is refused with all of them, so one run names everything to fix. A version may add to
what the contract fixes (:mod:`processors.policy.contract`), never rename or relax it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

from core.instants import aware, parse_instant
from processors.exceptions import PolicyError
from processors.policy.contract import (
    CONTRACT_CATEGORIES,
    CONTRACT_CHANNELS,
    CONTRACT_CONSENT_PURPOSES,
    CONTRACT_FORBIDDEN_GRANTS,
    CONTRACT_PROHIBITED_COLLECTIONS,
    CONTRACT_PROHIBITED_PURPOSES,
    CONTRACT_PURPOSES,
    CONTRACT_RECIPIENTS,
    CONTRACT_REQUIRED_GRANTS,
    CONTRACT_ROLES,
)
from processors.policy.model import (
    ALL,
    BASES,
    Agreement,
    Basis,
    Category,
    Channel,
    Citation,
    Duration,
    Extension,
    Policy,
    ProhibitedCollection,
    ProhibitedPurpose,
    Provision,
    Purpose,
    Recipient,
    RefusalGround,
    RequestClock,
    Retention,
    Role,
)

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


_TOP_REQUIRED = (
    "version",
    "effective_from",
    "effective_from_cites",
    "title",
    "source",
    "sections",
    "categories",
    "channels",
    "purposes",
    "prohibited_purposes",
    "roles",
    "recipients",
    "prohibited_collections",
    "retention",
)
_TOP_OPTIONAL = ("notes", "request_clock", "reason_codes")


class _Invalid(Exception):
    """A node is unusable; the problem is already recorded."""


class PolicyReader:
    """Reads one parsed policy document into a :class:`Policy`, collecting every problem."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.problems: list[tuple[str, str]] = []
        self.sections: frozenset[str] = frozenset()

    # ---- helpers

    def fail(self, path: str, reason: str) -> _Invalid:
        self.problems.append((path, reason))
        return _Invalid()

    def mapping(
        self, node: Any, path: str, required: Iterable[str], optional: Iterable[str] = ()
    ) -> dict[str, Any]:
        if not isinstance(node, dict):
            raise self.fail(path, f"must be a mapping, not {_kind(node)}")
        required = tuple(required)
        allowed = set(required) | set(optional)
        for key in node:
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                self.fail(_join(path, str(key)), f"unknown key {key!r} (known: {known})")
        missing = [key for key in required if key not in node]
        for key in missing:
            self.fail(_join(path, key), "is required")
        if missing:
            raise _Invalid()
        return node

    def named_entries(self, node: Any, path: str) -> dict[str, Any]:
        """A mapping from policy names to entries; bad names are reported."""
        if not isinstance(node, dict) or not node:
            raise self.fail(path, f"must be a non-empty mapping of names, not {_kind(node)}")
        entries: dict[str, Any] = {}
        for key, value in node.items():
            if not isinstance(key, str) or not _NAME.match(key):
                self.fail(_join(path, str(key)), "a name must be lower_snake_case letters/digits")
                continue
            entries[key] = value
        return entries

    def text(self, node: Any, path: str) -> str:
        if not isinstance(node, str) or not node.strip():
            raise self.fail(path, f"must be non-empty text, not {_kind(node)}")
        return node.strip()

    def names(
        self, node: Any, path: str, known: Mapping[str, Any] | frozenset[str], what: str
    ) -> frozenset[str]:
        """A list of known names, or ``all`` for every known name."""
        if node == ALL:
            return frozenset(known)
        if not isinstance(node, list):
            raise self.fail(path, f"must be a list of {what} names or '{ALL}', not {_kind(node)}")
        result: set[str] = set()
        for index, item in enumerate(node):
            item_path = f"{path}[{index}]"
            if not isinstance(item, str):
                self.fail(item_path, f"must be a {what} name, not {_kind(item)}")
            elif item not in known:
                self.fail(item_path, f"unknown {what} {item!r} (known: {_listing(known)})")
            elif item in result:
                self.fail(item_path, f"{what} {item!r} is listed twice")
            else:
                result.add(item)
        return frozenset(result)

    def cites(self, node: Any, path: str, key: str = "cites") -> Citation:
        """One ``{section, quote}``, or a non-empty list of them (the first is the rule's
        citation, the others its ``also``)."""
        cites_path = _join(path, key)
        if not isinstance(node, list):
            return self._citation(node, cites_path)
        if not node:
            raise self.fail(cites_path, "must name at least one section and quote")
        first, *more = [self._citation(item, f"{cites_path}[{i}]") for i, item in enumerate(node)]
        return Citation(first.section, first.quote, tuple(more))

    def _citation(self, node: Any, cites_path: str) -> Citation:
        fields = self.mapping(node, cites_path, ("section", "quote"))
        section = self.text(fields["section"], _join(cites_path, "section"))
        quote = self.text(fields["quote"], _join(cites_path, "quote"))
        if section not in self.sections:
            raise self.fail(
                _join(cites_path, "section"),
                f"{section!r} is not one of this file's sections ({_listing(self.sections)})",
            )
        return Citation(section, quote)

    def each(
        self, entries: Mapping[str, Any], path: str, read: Callable[[str, Any, str], Any]
    ) -> dict[str, Any]:
        """``read(name, node, path)`` for every entry, keeping those that are valid."""
        out: dict[str, Any] = {}
        for name, node in entries.items():
            try:
                out[name] = read(name, node, _join(path, name))
            except _Invalid:
                continue
        return out

    # ---- the document

    def read(self, document: Any) -> Policy:
        try:
            policy = self._read(document)
        except _Invalid:
            policy = None
        if self.problems or policy is None:
            raise PolicyError(self.file, self.problems or [("(document)", "is invalid")])
        return policy

    def _read(self, document: Any) -> Policy:
        if document is None:
            raise self.fail("(document)", "the file is empty")
        top = self.mapping(document, "(document)", _TOP_REQUIRED, _TOP_OPTIONAL)
        if self.problems:
            raise _Invalid()

        version = self._version(top["version"])
        effective_from = self._instant(top["effective_from"], "effective_from")
        title = self.text(top["title"], "title")
        source = self.text(top["source"], "source")
        notes = self.text(top["notes"], "notes") if "notes" in top else ""
        self.sections = self._sections(top["sections"])
        effective_from_cites = self.cites(top["effective_from_cites"], "", "effective_from_cites")

        categories = self.each(
            self.named_entries(top["categories"], "categories"), "categories", self._category
        )
        channels = self.each(
            self.named_entries(top["channels"], "channels"), "channels", self._channel
        )
        prohibited = self.each(
            self.named_entries(top["prohibited_purposes"], "prohibited_purposes"),
            "prohibited_purposes",
            lambda name, node, path: ProhibitedPurpose(
                name, self.cites(self.mapping(node, path, ("cites",))["cites"], path)
            ),
        )
        purpose_entries = self.named_entries(top["purposes"], "purposes")
        for name in purpose_entries:
            if name in prohibited:
                self.fail(f"purposes.{name}", f"{name!r} is also listed in prohibited_purposes")
        purpose_names = frozenset(purpose_entries)
        purposes = self.each(
            purpose_entries,
            "purposes",
            lambda name, node, path: self._purpose(name, node, path, categories, purpose_names),
        )
        roles = self.each(
            self.named_entries(top["roles"], "roles"),
            "roles",
            lambda name, node, path: self._role(name, node, path, categories),
        )
        recipients = self.each(
            self.named_entries(top["recipients"], "recipients"),
            "recipients",
            lambda name, node, path: self._recipient(name, node, path, categories, purposes),
        )
        collections = self._prohibited_collections(
            top["prohibited_collections"], categories, channels
        )
        retentions = self._retentions(top["retention"], categories)
        request_clock = (
            self._request_clock(top["request_clock"]) if "request_clock" in top else None
        )
        reason_codes: dict[str, Citation] = {}
        if "reason_codes" in top:
            reason_codes = self.each(
                self.named_entries(top["reason_codes"], "reason_codes"),
                "reason_codes",
                lambda _name, node, path: self.cites(
                    self.mapping(node, path, ("cites",))["cites"], path
                ),
            )
        if self.problems:
            raise _Invalid()
        self._contract(categories, purposes, prohibited, roles, channels, recipients, collections)
        return Policy(
            version=version,
            effective_from=effective_from,
            effective_from_cites=effective_from_cites,
            title=title,
            source=source,
            notes=notes,
            file=self.file,
            sections=tuple(top["sections"]),
            categories=MappingProxyType(categories),
            channels=MappingProxyType(channels),
            purposes=MappingProxyType(purposes),
            prohibited_purposes=MappingProxyType(prohibited),
            roles=MappingProxyType(roles),
            recipients=MappingProxyType(recipients),
            prohibited_collections=MappingProxyType(collections),
            retentions=MappingProxyType(retentions),
            request_clock=request_clock,
            reason_codes=MappingProxyType(reason_codes),
        )

    def _version(self, node: Any) -> str:
        if isinstance(node, date):  # an unquoted 2018-08-01 is read as a date
            return node.isoformat()
        version = self.text(node, "version")
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", version):
            raise self.fail("version", f"{version!r} must be letters, digits, '.', '_' or '-'")
        return version

    def _instant(self, node: Any, path: str) -> datetime:
        """A date (midnight UTC) or a date-time; a date-time without a zone is UTC."""
        if isinstance(node, str):
            try:
                return parse_instant(node)
            except ValueError:
                raise self.fail(path, f"{node!r} is not an ISO date such as 2018-08-01") from None
        value: Any = node
        if isinstance(value, datetime):
            return aware(value)
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        raise self.fail(path, f"must be an ISO date such as 2018-08-01, not {_kind(node)}")

    def _sections(self, node: Any) -> frozenset[str]:
        if not isinstance(node, list) or not node:
            raise self.fail("sections", "must be a non-empty list of the policy's section titles")
        sections = [self.text(item, f"sections[{i}]") for i, item in enumerate(node)]
        return frozenset(sections)

    def _category(self, name: str, node: Any, path: str) -> Category:
        return Category(name, *self._described(node, path))

    def _channel(self, name: str, node: Any, path: str) -> Channel:
        return Channel(name, *self._described(node, path))

    def _described(self, node: Any, path: str) -> tuple[str, Citation]:
        """An entry of a description and its citation (a category, a channel)."""
        fields = self.mapping(node, path, ("description", "cites"))
        return (
            self.text(fields["description"], _join(path, "description")),
            self.cites(fields["cites"], path),
        )

    def _purpose(
        self,
        name: str,
        node: Any,
        path: str,
        categories: Mapping[str, Category],
        purpose_names: frozenset[str],
    ) -> Purpose:
        fields = self.mapping(
            node, path, ("basis", "categories", "compatible_with", "cites"), ("granted_by_default",)
        )
        basis = fields["basis"]
        if basis not in BASES:
            raise self.fail(
                _join(path, "basis"), f"must be 'necessary' or 'consent', not {basis!r}"
            )
        granted = fields.get("granted_by_default", True)
        if "granted_by_default" in fields:
            if basis != "consent":
                self.fail(
                    _join(path, "granted_by_default"),
                    "only a consent-based purpose has a consent default",
                )
            if not isinstance(granted, bool):
                self.fail(
                    _join(path, "granted_by_default"), f"must be true or false, not {granted!r}"
                )
        compatible = fields["compatible_with"]
        compatible_with_all = compatible == ALL
        compatible_names = (
            frozenset()
            if compatible_with_all
            else self.names(compatible, _join(path, "compatible_with"), purpose_names, "purpose")
        )
        if name in compatible_names:
            self.fail(
                _join(path, "compatible_with"), f"{name!r} need not be compatible with itself"
            )
        return Purpose(
            name=name,
            basis=cast(Basis, basis),
            categories=self.names(
                fields["categories"], _join(path, "categories"), categories, "category"
            ),
            compatible_with=compatible_names,
            compatible_with_all=compatible_with_all,
            granted_by_default=bool(granted) if basis == "consent" else True,
            cites=self.cites(fields["cites"], path),
        )

    def _role(self, name: str, node: Any, path: str, categories: Mapping[str, Category]) -> Role:
        fields = self.mapping(node, path, ("categories", "cites"))
        return Role(
            name,
            self.names(fields["categories"], _join(path, "categories"), categories, "category"),
            self.cites(fields["cites"], path),
        )

    def _recipient(
        self,
        name: str,
        node: Any,
        path: str,
        categories: Mapping[str, Category],
        purposes: Mapping[str, Purpose],
    ) -> Recipient:
        fields = self.mapping(node, path, ("agreement", "categories", "purposes", "cites"))
        agreement_path = _join(path, "agreement")
        agreement = self.mapping(fields["agreement"], agreement_path, ("name", "reference"))
        return Recipient(
            name=name,
            agreement=Agreement(
                self.text(agreement["name"], _join(agreement_path, "name")),
                self.text(agreement["reference"], _join(agreement_path, "reference")),
            ),
            categories=self.names(
                fields["categories"], _join(path, "categories"), categories, "category"
            ),
            purposes=self.names(fields["purposes"], _join(path, "purposes"), purposes, "purpose"),
            cites=self.cites(fields["cites"], path),
        )

    def _prohibited_collections(
        self, node: Any, categories: Mapping[str, Category], channels: Mapping[str, Channel]
    ) -> dict[tuple[str, str], ProhibitedCollection]:
        if not isinstance(node, list):
            raise self.fail("prohibited_collections", f"must be a list, not {_kind(node)}")
        out: dict[tuple[str, str], ProhibitedCollection] = {}
        for index, item in enumerate(node):
            path = f"prohibited_collections[{index}]"
            try:
                fields = self.mapping(item, path, ("channel", "category", "cites"))
                channel, category = fields["channel"], fields["category"]
                if channel not in channels:
                    self.fail(_join(path, "channel"), f"unknown channel {channel!r}")
                if category not in categories:
                    self.fail(_join(path, "category"), f"unknown category {category!r}")
                if (channel, category) in out:
                    self.fail(path, f"({channel}, {category}) is listed twice")
                out[(channel, category)] = ProhibitedCollection(
                    index, channel, category, self.cites(fields["cites"], path)
                )
            except _Invalid:
                continue
        return out

    def _retentions(self, node: Any, categories: Mapping[str, Category]) -> dict[str, Retention]:
        entries = self.named_entries(node, "retention")
        out: dict[str, Retention] = {}
        for name, item in entries.items():
            path = f"retention.{name}"
            if name not in categories:
                self.fail(path, f"unknown category {name!r} (known: {_listing(categories)})")
                continue
            try:
                out[name] = self._retention(name, item, path)
            except _Invalid:
                continue
        for name in categories:
            if name not in entries:
                self.fail(f"retention.{name}", "every category needs a retention rule")
        return out

    def _retention(self, name: str, node: Any, path: str) -> Retention:
        fields = self.mapping(node, path, ("period", "cites"), ("legal_basis", "keep_for"))
        period = self._duration(fields["period"], _join(path, "period"), nullable=True)
        has_basis, has_keep = "legal_basis" in fields, "keep_for" in fields
        if has_basis != has_keep:
            raise self.fail(path, "legal_basis and keep_for go together (why, and how long)")
        basis = self.text(fields["legal_basis"], _join(path, "legal_basis")) if has_basis else None
        keep_for = (
            self._duration(fields["keep_for"], _join(path, "keep_for"), nullable=False)
            if has_keep
            else None
        )
        return Retention(name, period, basis, keep_for, self.cites(fields["cites"], path))

    def _request_clock(self, node: Any) -> RequestClock | None:
        path = "request_clock"
        try:
            fields = self.mapping(
                node,
                path,
                ("law", "cites", "placeholder", "answer"),
                ("extension", "refusal"),
            )
            law = self.text(fields["law"], _join(path, "law"))
            placeholder = fields["placeholder"]
            if not isinstance(placeholder, bool):
                self.fail(
                    _join(path, "placeholder"), f"must be true or false, not {_kind(placeholder)}"
                )
            answer_path = _join(path, "answer")
            answer = self.mapping(fields["answer"], answer_path, ("within", "provision"))
            within = self._duration(answer["within"], _join(answer_path, "within"), nullable=False)
            answer_cites = self._provision(law, answer["provision"], answer_path)
            extension = (
                self._extension(law, fields["extension"], _join(path, "extension"))
                if fields.get("extension") is not None
                else None
            )
            refusals = self._refusals(law, fields.get("refusal", {}), _join(path, "refusal"))
            cites = self.cites(fields["cites"], path)
        except _Invalid:
            return None
        assert within is not None
        return RequestClock(
            law=law,
            cites=cites,
            placeholder=placeholder is True,
            answer_within=within,
            answer_cites=answer_cites,
            extension=extension,
            refusals=MappingProxyType(refusals),
        )

    def _provision(self, law: str, node: Any, path: str) -> Provision:
        return Provision(law, self.text(node, _join(path, "provision")))

    def _extension(self, law: str, node: Any, path: str) -> Extension:
        fields = self.mapping(
            node, path, ("times", "by", "notice_within", "condition", "reasons", "provision")
        )
        times = fields["times"]
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            raise self.fail(
                _join(path, "times"),
                f"must be a whole number of at least 1 (no extension: leave extension out), "
                f"not {_kind(times)}",
            )
        by = self._duration(fields["by"], _join(path, "by"), nullable=False)
        notice = self._duration(
            fields["notice_within"], _join(path, "notice_within"), nullable=False
        )
        reasons_path = _join(path, "reasons")
        reasons = {
            name: self.text(text, _join(reasons_path, name))
            for name, text in self.named_entries(fields["reasons"], reasons_path).items()
        }
        assert by is not None and notice is not None
        return Extension(
            times=times,
            by=by,
            notice_within=notice,
            condition=self.text(fields["condition"], _join(path, "condition")),
            reasons=MappingProxyType(reasons),
            cites=self._provision(law, fields["provision"], path),
        )

    def _refusals(self, law: str, node: Any, path: str) -> dict[str, RefusalGround]:
        if node == {}:
            return {}
        out: dict[str, RefusalGround] = {}
        for name, item in self.named_entries(node, path).items():
            item_path = _join(path, name)
            try:
                fields = self.mapping(item, item_path, ("description", "provision"))
                out[name] = RefusalGround(
                    name,
                    self.text(fields["description"], _join(item_path, "description")),
                    self._provision(law, fields["provision"], item_path),
                )
            except _Invalid:
                continue
        return out

    def _duration(self, node: Any, path: str, *, nullable: bool) -> Duration | None:
        if node is None and nullable:
            return None
        if not isinstance(node, str):
            expected = "an ISO 8601 period such as P90D" + (" or null" if nullable else "")
            raise self.fail(path, f"must be {expected}, not {_kind(node)}")
        try:
            return Duration.parse(node)
        except ValueError as exc:
            raise self.fail(path, str(exc)) from None

    def _contract(
        self,
        categories: Mapping[str, Category],
        purposes: Mapping[str, Purpose],
        prohibited: Mapping[str, ProhibitedPurpose],
        roles: Mapping[str, Role],
        channels: Mapping[str, Channel],
        recipients: Mapping[str, Recipient],
        collections: Mapping[tuple[str, str], ProhibitedCollection],
    ) -> None:
        """The names and limits the contract fixes: a version may add, never rename or relax."""
        required = [
            ("categories", CONTRACT_CATEGORIES, categories),
            ("purposes", CONTRACT_PURPOSES, purposes),
            ("prohibited_purposes", CONTRACT_PROHIBITED_PURPOSES, prohibited),
            ("roles", CONTRACT_ROLES, roles),
            ("channels", CONTRACT_CHANNELS, channels),
            ("recipients", CONTRACT_RECIPIENTS, recipients),
        ]
        for section, names, present in required:
            for name in sorted(names - set(present)):
                self.fail(
                    f"{section}.{name}", "is required by the contract (may add, never rename)"
                )
        for name in sorted(CONTRACT_CONSENT_PURPOSES & set(purposes)):
            if purposes[name].basis != "consent":
                self.fail(f"purposes.{name}.basis", "the contract makes this purpose consent-based")
        for role, forbidden in CONTRACT_FORBIDDEN_GRANTS.items():
            if role in roles:
                for category in sorted(roles[role].categories & forbidden):
                    self.fail(
                        f"roles.{role}.categories",
                        f"the contract forbids {role} to touch {category!r}",
                    )
        for role, needed in CONTRACT_REQUIRED_GRANTS.items():
            if role in roles:
                for category in sorted(needed - roles[role].categories):
                    self.fail(
                        f"roles.{role}.categories", f"the contract grants {role} {category!r}"
                    )
        for channel, category in sorted(CONTRACT_PROHIBITED_COLLECTIONS - set(collections)):
            self.fail(
                "prohibited_collections",
                f"the contract prohibits collecting {category!r} via {channel!r}",
            )
        if self.problems:
            raise _Invalid()


def _join(path: str, key: str) -> str:
    return key if path in ("", "(document)") else f"{path}.{key}"


def _kind(node: Any) -> str:
    if node is None:
        return "nothing"
    if isinstance(node, bool):
        return f"{str(node).lower()} (a boolean)"
    if isinstance(node, str):
        return f"the text {node!r}"
    return f"a {type(node).__name__}"


def _listing(known: Iterable[str]) -> str:
    return ", ".join(sorted(known))
