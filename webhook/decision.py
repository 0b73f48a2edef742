"""What a mutator or validator decided: patch operations, warnings, or a refusal."""

from __future__ import annotations

from dataclasses import dataclass, field

from webhook.patches import PatchOp


@dataclass
class Decision:
    allowed: bool = True
    patch: list[PatchOp] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Only for refusals: the message kubectl prints, and the HTTP-like code the apiserver shows.
    message: str | None = None
    code: int | None = None

    @classmethod
    def deny(cls, message: str, *, code: int = 403, warnings: list[str] | None = None) -> Decision:
        return cls(allowed=False, message=message, code=code, warnings=warnings or [])
