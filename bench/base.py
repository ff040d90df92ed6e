"""What every benchmark speaks in: a measured :class:`Row` (figure beside its baseline, the
target it is judged by) and the :class:`Scale` it ran at."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Goal = Literal["at_least", "at_most", "ratio_at_least"]


@dataclass(frozen=True, slots=True)
class Target:
    """What a figure must reach: an absolute floor or ceiling, or a floor on figure/baseline."""

    goal: Goal
    value: float

    def met(self, figure: float, ratio: float | None) -> bool:
        if self.goal == "at_least":
            return figure >= self.value
        if self.goal == "at_most":
            return figure <= self.value
        return ratio is not None and ratio >= self.value

    def __str__(self) -> str:
        if self.goal == "ratio_at_least":
            return f"ratio >= {self.value:g}"
        sign = ">=" if self.goal == "at_least" else "<="
        return f"{sign} {_number(self.value)}"


@dataclass(frozen=True, slots=True)
class Row:
    """One measured figure, with the baseline measured beside it in the same run."""

    benchmark: str
    figure: str
    unit: str
    value: float
    baseline: float | None
    baseline_what: str
    target: Target | None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "-"
        return "pass" if self.target.met(self.value, self.ratio) else "MISS"

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = None if self.target is None else asdict(self.target)
        data["ratio"] = self.ratio
        data["verdict"] = self.verdict
        return data


@dataclass(frozen=True, slots=True)
class Scale:
    """How big each benchmark runs: ``full`` for ``make bench``, ``tiny`` for the smoke test."""

    tiny: bool = False

    def pick(self, full: int, tiny: int) -> int:
        return tiny if self.tiny else full

    @property
    def name(self) -> str:
        return "tiny" if self.tiny else "full"


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def fmt(value: float | None) -> str:
    """A figure for the table: thousands separators for rates, 3 digits for small numbers."""
    return "-" if value is None else _number(value)
