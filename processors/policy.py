"""The customer-data privacy policy as code: versioned YAML files, loaded and validated once.

Every ``*.yaml`` file in the policy directory is one complete version of the policy, derived
sentence by sentence from the published text; every rule in it cites the section it comes from.
:func:`load_policies` reads them all into a :class:`PolicyBook`, refusing the whole book with a
:class:`~processors.exceptions.PolicyError` (file, path inside it, reason) on the first file that
is wrong. The book answers which :class:`Policy` was in force at an instant: the version with the
latest ``effective_from`` not after it, and the earliest version for instants before them all.

Lookups are dictionary and frozenset membership tests: the decision engine consults the policy
for every event.
"""

from __future__ import annotations

import bisect
import calendar
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

import yaml

from processors.exceptions import PolicyError

Basis = Literal["necessary", "consent"]
BASES: frozenset[str] = frozenset({"necessary", "consent"})

ALL = "all"
"""Written instead of a list: every category (or, for ``compatible_with``, every purpose)."""

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_DURATION = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?$")


# --------------------------------------------------------------------------- value types


@dataclass(frozen=True, slots=True)
class Citation:
    """Where a rule comes from: a section of the published policy and a short quote of it.

    A rule resting on several sentences (a purpose named in INFORMATION USE whose consent basis
    is in INTRODUCTION, say) lists them all under ``cites:``; the first is the rule's citation
    (the one decisions name) and the others are in ``also``.
    """

    section: str
    quote: str
    also: tuple[Citation, ...] = ()

    def every(self) -> tuple[Citation, ...]:
        """This citation and the further ones, each without further ones."""
        return (Citation(self.section, self.quote), *self.also)

    def __str__(self) -> str:
        return f'{self.section}: "{self.quote}"'


@dataclass(frozen=True, slots=True)
class Duration:
    """A calendar period written in ISO 8601 (``P90D``, ``P6Y``, ``P1Y6M``).

    Years and months are calendar units, so six years after 2026-02-02 is 2032-02-02 (a 29
    February start ends on 28 February when the end year has none).
    """

    years: int = 0
    months: int = 0
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> Duration:
        match = _DURATION.match(text)
        if match is None or text == "P":
            raise ValueError(f"{text!r} is not an ISO 8601 period such as P90D, P6Y or P1Y6M")
        years, months, days = (int(group or 0) for group in match.groups())
        return cls(years, months, days)

    def after(self, start: datetime) -> datetime:
        """The instant this period after ``start``."""
        month_index = start.month - 1 + self.months + 12 * self.years
        year = start.year + month_index // 12
        month = month_index % 12 + 1
        day = min(start.day, calendar.monthrange(year, month)[1])
        return start.replace(year=year, month=month, day=day) + timedelta(days=self.days)

    def __str__(self) -> str:
        parts = ((self.years, "Y"), (self.months, "M"), (self.days, "D"))
        return "P" + ("".join(f"{n}{unit}" for n, unit in parts if n) or "0D")


@dataclass(frozen=True, slots=True)
class Category:
    """A category of personal data the policy says may be collected."""

    name: str
    description: str
    cites: Citation


@dataclass(frozen=True, slots=True)
class Channel:
    """A way data reaches the Commission (a form, in person, the website ...)."""

    name: str
    description: str
    cites: Citation


@dataclass(frozen=True, slots=True)
class Purpose:
    """A permitted purpose: its basis, the categories it may use, and the collection purposes it
    is compatible with (data collected for one of those may be used for this one too)."""

    name: str
    basis: Basis
    categories: frozenset[str]
    compatible_with: frozenset[str]
    compatible_with_all: bool
    granted_by_default: bool
    cites: Citation

    @property
    def consent_based(self) -> bool:
        return self.basis == "consent"

    def permits_data_collected_for(self, collected_for: Iterable[str]) -> str | None:
        """The collection purpose that lets data collected for ``collected_for`` serve this one,
        or None. Prefers this purpose itself, then the first compatible one."""
        purposes = tuple(collected_for)
        if self.name in purposes:
            return self.name
        for declared in purposes:
            if self.compatible_with_all or declared in self.compatible_with:
                return declared
        return None


@dataclass(frozen=True, slots=True)
class ProhibitedPurpose:
    """A purpose that is refused for everyone (sale, trade ...)."""

    name: str
    cites: Citation


@dataclass(frozen=True, slots=True)
class Role:
    """An employee or system role and the categories its job function needs."""

    name: str
    categories: frozenset[str]
    cites: Citation


@dataclass(frozen=True, slots=True)
class Agreement:
    """The confidentiality agreement (or legal ground) under which a recipient receives data."""

    name: str
    reference: str


@dataclass(frozen=True, slots=True)
class Recipient:
    """A trusted outside party: what it may receive, for which purposes, under which agreement."""

    name: str
    agreement: Agreement
    categories: frozenset[str]
    purposes: frozenset[str]
    cites: Citation


@dataclass(frozen=True, slots=True)
class ProhibitedCollection:
    """A category that must never be collected through a channel."""

    index: int
    channel: str
    category: str
    cites: Citation


@dataclass(frozen=True, slots=True)
class LegalHold:
    """Why and until when the law requires a category to be kept, even against erasure."""

    basis: str
    until: date

    @property
    def until_iso(self) -> str:
        return self.until.isoformat()


@dataclass(frozen=True, slots=True)
class Retention:
    """How long a category is kept.

    ``period`` counts from the (latest) collection; None means "as long as the purposes it was
    collected for last", which ends only with an erasure request. ``keep_for`` is the time the
    law requires it kept (``legal_basis`` says which law); an erasure request does not shorten it.
    """

    category: str
    period: Duration | None
    legal_basis: str | None
    keep_for: Duration | None
    cites: Citation

    def expires_at(self, collected_at: datetime) -> datetime | None:
        """When data collected at ``collected_at`` has outlived its retention (None: never by
        itself). The legal period, when longer, extends it."""
        if self.period is None:
            return None
        end = self.period.after(collected_at)
        if self.keep_for is not None:
            end = max(end, self.keep_for.after(collected_at))
        return end

    def legal_hold(self, collected_at: datetime) -> LegalHold | None:
        """The hold the law puts on data collected at ``collected_at``: kept through ``until``."""
        if self.keep_for is None or self.legal_basis is None:
            return None
        return LegalHold(self.legal_basis, self.keep_for.after(collected_at).date())


@dataclass(frozen=True, slots=True, eq=False)
class Policy:
    """One version of the policy. Mappings are read-only; names are the policy's identifiers."""

    version: str
    effective_from: datetime
    effective_from_cites: Citation
    title: str
    source: str
    notes: str
    file: Path
    sections: tuple[str, ...]
    categories: Mapping[str, Category]
    channels: Mapping[str, Channel]
    purposes: Mapping[str, Purpose]
    prohibited_purposes: Mapping[str, ProhibitedPurpose]
    roles: Mapping[str, Role]
    recipients: Mapping[str, Recipient]
    prohibited_collections: Mapping[tuple[str, str], ProhibitedCollection]
    retentions: Mapping[str, Retention]
    reason_codes: Mapping[str, Citation] = field(default_factory=lambda: MappingProxyType({}))
    """Reason codes the pipeline added to the contract's, each with the sentence of the
    policy it rests on (``reason_codes:`` in the file, optional)."""

    def retention(self, category: str) -> Retention:
        """The retention rule of ``category`` (KeyError naming it when the policy has none)."""
        try:
            return self.retentions[category]
        except KeyError:
            raise KeyError(f"policy {self.version} has no category {category!r}") from None

    def legal_hold(self, category: str, collected_at: datetime) -> LegalHold | None:
        """The legal hold on ``category`` collected at ``collected_at`` (None: none, or the
        category is unknown to this version)."""
        rule = self.retentions.get(category)
        return None if rule is None else rule.legal_hold(collected_at)

    def __repr__(self) -> str:
        return f"Policy(version={self.version!r}, effective_from={self.effective_from.isoformat()})"


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """Every name any version of the policy knows; what the publisher validates input against.

    ``purposes`` holds the permitted and the known-prohibited purposes: a prohibited purpose is a
    valid name (the event is published, then denied ``purpose_not_permitted``).
    """

    categories: frozenset[str]
    purposes: frozenset[str]
    permitted_purposes: frozenset[str]
    prohibited_purposes: frozenset[str]
    roles: frozenset[str]
    channels: frozenset[str]
    recipients: frozenset[str]
    prohibited_collections: frozenset[tuple[str, str]]


class PolicyBook:
    """Every version of the policy, ordered by ``effective_from``."""

    __slots__ = ("_by_version", "_policies", "_starts", "_vocabulary")

    def __init__(self, policies: Iterable[Policy]) -> None:
        ordered = sorted(policies, key=lambda policy: policy.effective_from)
        if not ordered:
            raise ValueError("a PolicyBook needs at least one policy version")
        self._policies = tuple(ordered)
        self._starts = [policy.effective_from for policy in ordered]
        self._by_version = {policy.version: policy for policy in ordered}
        self._vocabulary = _vocabulary(ordered)

    @property
    def versions(self) -> tuple[str, ...]:
        """Version names, oldest first."""
        return tuple(policy.version for policy in self._policies)

    @property
    def policies(self) -> tuple[Policy, ...]:
        return self._policies

    @property
    def latest(self) -> Policy:
        return self._policies[-1]

    def get(self, version: str) -> Policy:
        return self._by_version[version]

    def in_force(self, at: datetime) -> Policy:
        """The version in force at ``at`` (naive means UTC). Before the first version took
        effect, the first version judges: there is no earlier policy to apply."""
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        index = bisect.bisect_right(self._starts, at) - 1
        return self._policies[index if index >= 0 else 0]

    def vocabulary(self) -> Vocabulary:
        return self._vocabulary

    def __iter__(self) -> Iterator[Policy]:
        return iter(self._policies)

    def __len__(self) -> int:
        return len(self._policies)


def _vocabulary(policies: Iterable[Policy]) -> Vocabulary:
    categories: set[str] = set()
    permitted: set[str] = set()
    prohibited: set[str] = set()
    roles: set[str] = set()
    channels: set[str] = set()
    recipients: set[str] = set()
    collections: set[tuple[str, str]] = set()
    for policy in policies:
        categories.update(policy.categories)
        permitted.update(policy.purposes)
        prohibited.update(policy.prohibited_purposes)
        roles.update(policy.roles)
        channels.update(policy.channels)
        recipients.update(policy.recipients)
        collections.update(policy.prohibited_collections)
    return Vocabulary(
        categories=frozenset(categories),
        purposes=frozenset(permitted | prohibited),
        permitted_purposes=frozenset(permitted),
        prohibited_purposes=frozenset(prohibited),
        roles=frozenset(roles),
        channels=frozenset(channels),
        recipients=frozenset(recipients),
        prohibited_collections=frozenset(collections),
    )


# --------------------------------------------------------------------------- loading


def load_policies(policy_dir: Path) -> PolicyBook:
    """Load and validate every ``*.yaml`` file in ``policy_dir`` (raises PolicyError)."""
    if not policy_dir.is_dir():
        raise PolicyError(policy_dir, [("(directory)", "no such policy directory")])
    files = sorted(policy_dir.glob("*.yaml"))
    if not files:
        raise PolicyError(policy_dir, [("(directory)", "holds no *.yaml policy file")])
    policies: list[Policy] = []
    version_files: dict[str, Path] = {}
    start_files: dict[datetime, Path] = {}
    for path in files:
        policy = load_policy_file(path)
        if policy.version in version_files:
            other = version_files[policy.version].name
            raise PolicyError(path, [("version", f"version {policy.version!r} is also in {other}")])
        if policy.effective_from in start_files:
            other = start_files[policy.effective_from].name
            reason = f"{policy.effective_from.date()} is also the effective_from of {other}"
            raise PolicyError(path, [("effective_from", reason)])
        version_files[policy.version] = path
        start_files[policy.effective_from] = path
        policies.append(policy)
    return PolicyBook(policies)


def load_policy_file(path: Path) -> Policy:
    """Load and validate one policy file (raises PolicyError naming it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(path, [("(file)", f"cannot be read: {exc}")]) from exc
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        raise PolicyError(path, [(where, f"not valid YAML: {exc.problem or exc}")]) from exc
    except yaml.YAMLError as exc:
        raise PolicyError(path, [("(yaml)", f"not valid YAML: {exc}")]) from exc
    return _PolicyReader(path).read(document)


_YamlBase: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_YamlBase):  # type: ignore[misc]
    """The safe loader, refusing a key written twice in one mapping (YAML keeps the last one
    silently, which in a policy file would drop a rule without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain name", key_node.start_mark
                ) from None
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in this mapping", key_node.start_mark
                )
            seen.add(key)
        return cast(dict[Any, Any], super().construct_mapping(node, deep))


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping
)


# What the contract (shared/CONTRACT.md) fixes: every version must keep these names and limits.
CONTRACT_CATEGORIES = frozenset(
    {"name", "address", "date_of_birth", "telephone", "fax", "email", "banking"}
    | {"service_account", "web_log", "credit_card", "documents"}
)
CONTRACT_PURPOSES = frozenset(
    {"service_provision", "customer_support", "website_administration", "billing"}
    | {"account_notices", "transaction_processing", "personalization", "website_improvement"}
    | {"correspondence_followup", "service_information", "contests_promotions_surveys"}
    | {"legal_compliance"}
)
CONTRACT_CONSENT_PURPOSES = frozenset(
    {"service_information", "personalization", "contests_promotions_surveys"}
)
CONTRACT_PROHIBITED_PURPOSES = frozenset({"sale", "trade"})
CONTRACT_ROLES = frozenset(
    {"billing_clerk", "customer_service", "field_technician", "web_admin", "marketing"}
    | {"privacy_officer", "system"}
)
CONTRACT_CHANNELS = frozenset(
    {"paper_form", "web_form", "in_person", "telephone", "email", "website", "online_tendering"}
)
CONTRACT_RECIPIENTS = frozenset({"first_atlantic_commerce", "authorities"})
CONTRACT_FORBIDDEN_GRANTS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        role: frozenset({"banking", "credit_card", "date_of_birth"})
        for role in ("web_admin", "field_technician", "marketing")
    }
)
CONTRACT_REQUIRED_GRANTS: Mapping[str, frozenset[str]] = MappingProxyType(
    {"billing_clerk": frozenset({"banking", "service_account"})}
)
CONTRACT_PROHIBITED_COLLECTIONS = frozenset({("online_tendering", "credit_card")})

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
_TOP_OPTIONAL = ("notes", "reason_codes")


class _Invalid(Exception):
    """A node is unusable; the problem is already recorded."""


class _PolicyReader:
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
        value: Any = node
        if isinstance(node, str):
            try:
                value = datetime.fromisoformat(node) if "T" in node else date.fromisoformat(node)
            except ValueError:
                raise self.fail(path, f"{node!r} is not an ISO date such as 2018-08-01") from None
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        raise self.fail(path, f"must be an ISO date such as 2018-08-01, not {_kind(node)}")

    def _sections(self, node: Any) -> frozenset[str]:
        if not isinstance(node, list) or not node:
            raise self.fail("sections", "must be a non-empty list of the policy's section titles")
        sections = [self.text(item, f"sections[{i}]") for i, item in enumerate(node)]
        return frozenset(sections)

    def _category(self, name: str, node: Any, path: str) -> Category:
        fields = self.mapping(node, path, ("description", "cites"))
        return Category(
            name,
            self.text(fields["description"], _join(path, "description")),
            self.cites(fields["cites"], path),
        )

    def _channel(self, name: str, node: Any, path: str) -> Channel:
        fields = self.mapping(node, path, ("description", "cites"))
        return Channel(
            name,
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
        """The names and limits CONTRACT.md fixes: a version may add, never rename or relax."""
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
