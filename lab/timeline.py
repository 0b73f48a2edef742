"""What happened when, around one migration: marks with host time, printed as a table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict


@dataclass(frozen=True)
class Mark:
    label: str
    at: float  # host epoch seconds
    detail: str = ""


class MarkDict(TypedDict):
    label: str
    at: float
    elapsed_s: float
    detail: str


@dataclass
class Timeline:
    """Marks relative to ``origin`` (the start of the migration)."""

    origin: float
    marks: list[Mark] = field(default_factory=list)

    def add(self, label: str, at: float | None, detail: str = "") -> None:
        if at is not None:
            self.marks.append(Mark(label, at, detail))

    def ordered(self) -> list[Mark]:
        return sorted(self.marks, key=lambda m: m.at)

    def at(self, label: str) -> float | None:
        for mark in self.marks:
            if mark.label == label:
                return mark.at
        return None

    def elapsed(self, label: str) -> float | None:
        at = self.at(label)
        return None if at is None else at - self.origin

    def as_dicts(self) -> list[MarkDict]:
        return [
            MarkDict(label=m.label, at=m.at, elapsed_s=round(m.at - self.origin, 3), detail=m.detail)
            for m in self.ordered()
        ]

    def table(self, title: str = "") -> str:
        width = max((len(m.label) for m in self.marks), default=10)
        lines = [title] if title else []
        lines.append(f"  {'t (s)':>8}  {'event':<{width}}  detail")
        lines += [f"  {m.at - self.origin:>8.2f}  {m.label:<{width}}  {m.detail}" for m in self.ordered()]
        return "\n".join(lines)
