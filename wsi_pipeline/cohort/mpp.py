"""Which pixel size (level-0 µm/px) each slide of a run is processed at, and why.

A wrong pixel size is the most common cause of wrong cohort results: every size the pipeline
measures scales with it (areas with its square), and nothing downstream can tell. So the rules
are explicit and every slide records where its value came from:

1. the slide's own `mpp` in a CSV slide list ("csv": the user said so for this one slide);
2. `mpp_override` (--mpp-override), for slides whose metadata is known to be wrong ("override");
3. the file's metadata ("metadata"), or its objective power as 10 / power ("objective_power");
4. `mpp` (--mpp), only for files that carry none ("fallback").

Values outside a plausible range (default 0.1-2 µm/px) are refused unless confirmed: --mpp 100
once turned a 768 px crop into a 90-hour run, and --mpp 1e-6 ended in a MemoryError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from wsi_pipeline.io.base import TYPICAL_MPP_HINT

__all__ = ["ResolvedMpp", "implausible_reason", "missing_mpp_message", "resolve_mpp"]

#: Sources whose value is the user's choice rather than the file's: they enter the stage hash.
USER_SOURCES = ("csv", "override", "fallback")
#: How each source is named in messages.
SOURCE_LABEL = {
    "csv": "the slide list's mpp column",
    "override": "--mpp-override",
    "fallback": "--mpp (fallback)",
    "metadata": "the file's metadata",
    "objective_power": "the file's objective power",
    "given": "the caller",
}


@dataclass(frozen=True)
class ResolvedMpp:
    """The pixel size a slide is processed at; `value` None: the slide has none at all."""

    value: float | None
    source: str | None
    native: float | None = None  # what the file itself says (None: nothing)
    native_source: str | None = None
    objective_power: float | None = None

    @property
    def hash_value(self) -> float | None:
        """What the inference hash records: the value where the user chose it, None where it is
        the file's own (then the file's fingerprint already identifies it). So adding --mpp to
        rescue one slide does not redo the slides that carry their own pixel size."""
        return self.value if self.source in USER_SOURCES else None

    def describe(self) -> str:
        """'0.25 µm/px from --mpp-override (the file says 0.499)', for logs and messages."""
        if self.value is None:
            return "no pixel size"
        text = f"{self.value:g} µm/px from {SOURCE_LABEL.get(self.source or '', self.source)}"
        if self.native is not None and self.source in USER_SOURCES and not _close(self.native, self.value):
            text += f" (the file says {self.native:g})"
        return text


def resolve_mpp(
    native: tuple[float, str] | None,
    *,
    csv: float | None = None,
    override: float | None = None,
    fallback: float | None = None,
    objective_power: float | None = None,
) -> ResolvedMpp:
    """Apply the rules of this module's docstring to one slide."""
    native_value, native_source = native if native is not None else (None, None)

    def resolved(value: float | None, source: str | None) -> ResolvedMpp:
        return ResolvedMpp(
            value, source, native=native_value, native_source=native_source, objective_power=objective_power
        )

    if csv is not None:
        return resolved(float(csv), "csv")
    if override is not None:
        return resolved(float(override), "override")
    if native_value is not None:
        return resolved(float(native_value), native_source)
    if fallback is not None:
        return resolved(float(fallback), "fallback")
    return resolved(None, None)


def implausible_reason(mpp: float, bounds: tuple[float, float]) -> str | None:
    """Why `mpp` is not believable as a scan's pixel size, or None when it is."""
    lo, hi = bounds
    if not math.isfinite(mpp) or mpp <= 0:
        return f"{mpp!r} is not a positive number"
    if lo <= mpp <= hi:
        return None
    return f"{mpp:g} µm/px is outside the plausible {lo:g}-{hi:g} µm/px ({TYPICAL_MPP_HINT})"


def missing_mpp_message(path: Path, objective_power: float | None) -> str:
    """One line of a refusal for a slide without any pixel size (the advice follows once, after
    all such lines): the file, and its objective power where it records one."""
    power = f" (the file gives objective power {objective_power:g}×)" if objective_power else ""
    return f"{path}: no pixel size (mpp) in the file's metadata{power}"


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 0.01 * max(abs(a), abs(b))
