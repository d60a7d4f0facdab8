"""Where a result's claim rows belong: `Recording` (chapter, profile, model).

A result object keeps one and measures its declared claims (`claims.declare`) through it, so its
`claims()` needs no arguments: `Recording.measure(spec, value, tested=..., **fields)` is
`spec.measure(...)` with the chapter, profile and model filled in.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from optim_hunter.report import claims


@dataclasses.dataclass(frozen=True)
class Recording:
    """Where a result's claim rows belong."""

    chapter: str
    profile: str
    model: str = ""

    def measure(self, spec: claims.ClaimSpec, measured: float | str | None, *, tested: Any = None,
                interval: claims.Interval | None = None, why_no_interval: str = "",
                decides_source: bool | None = None, **fields: Any) -> claims.Claim:
        """`spec.measure(measured, tested=tested, interval=..., ...)` with this chapter, profile and model."""
        return spec.measure(measured, chapter=self.chapter, profile=self.profile, model=self.model,
                            tested=tested, interval=interval, why_no_interval=why_no_interval,
                            decides_source=decides_source, **fields)
