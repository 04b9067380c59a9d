"""Per-slide plausibility checks: results that look wrong must say so.

A run can finish "done" and still be wrong: at a wrong pixel size a TCGA slide gave 0 nuclei on
0.64 mm² of tissue, and nothing in its outputs said anything was amiss. These checks compare a
slide's nuclei with what H&E tissue looks like and return short flags (strings, joined with ";"
in tables) that summary.json, the manifest's `qc` column, the slide log and `summarize` carry:

- `no_nuclei_on_tissue`: tissue was found but not one nucleus on it;
- `median_area_low` / `median_area_high`: the median nucleus area is outside `median_area_um2`
  (nuclei are ≈20-80 µm²; a pixel size off by 2× moves areas 4×);
- `density_low` / `density_high`: nuclei per mm² of tissue outside `density_per_mm2`;
- `low_type_confidence`: most nuclei got their type with a probability below `low_type_prob`
  (tissue unlike the training data, or a stain far from it).

Statistics come from one pass over the nuclei table in batches; the median is read off a fine
log-spaced histogram, so memory stays flat whatever the number of nuclei.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["FLAGS", "QCConfig", "QCStats", "describe", "qc_report"]

FLAGS = ("no_nuclei_on_tissue", "median_area_low", "median_area_high", "density_low",
         "density_high", "low_type_confidence")

# Log-spaced area bins, 1e-3 .. 1e6 µm²: neighbouring edges differ by 0.5 %, the median's error.
_EDGES = np.geomspace(1e-3, 1e6, 4001)


class QCConfig(BaseModel):
    """Bounds of what a plausible H&E slide looks like; outside them a slide is flagged."""

    model_config = ConfigDict(extra="forbid")

    median_area_um2: tuple[float, float] = Field(
        (10.0, 150.0), description="plausible median nucleus area (µm²)"
    )
    density_per_mm2: tuple[float, float] = Field(
        (100.0, 30000.0), description="plausible nuclei per mm² of detected tissue"
    )
    low_type_prob: float = Field(
        0.5, ge=0, le=1, description="a nucleus whose type probability is below this is 'low confidence'"
    )
    max_low_type_fraction: float = Field(
        0.5, ge=0, le=1, description="flag low_type_confidence when more nuclei than this share are"
    )
    min_tissue_mm2: float = Field(
        0.01, ge=0, description="less tissue than this is too little to judge nuclei or density"
    )
    min_nuclei: int = Field(
        20, ge=1, description="fewer nuclei than this are too few to judge their median area or types"
    )

    @field_validator("median_area_um2", "density_per_mm2")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] < v[1]:
            raise ValueError("must be [low, high] with 0 <= low < high")
        return v


@dataclass
class QCStats:
    """What the checks need from the nuclei table, accumulated batch by batch."""

    low_type_prob: float = 0.5
    n: int = 0
    n_low_type: int = 0
    area_hist: np.ndarray = field(default_factory=lambda: np.zeros(len(_EDGES) - 1, np.int64))

    def add(self, area_um2: np.ndarray, type_prob: np.ndarray) -> None:
        area = np.clip(np.asarray(area_um2, np.float64), _EDGES[0], _EDGES[-1])
        idx = np.clip(np.searchsorted(_EDGES, area, side="right") - 1, 0, len(self.area_hist) - 1)
        self.area_hist += np.bincount(idx, minlength=len(self.area_hist))
        self.n += len(area)
        self.n_low_type += int((np.asarray(type_prob) < self.low_type_prob).sum())

    def median_area(self) -> float | None:
        """The median area to within half a percent (geometric middle of its bin)."""
        if self.n == 0:
            return None
        i = int(np.searchsorted(np.cumsum(self.area_hist), (self.n + 1) / 2))
        return float(np.sqrt(_EDGES[i] * _EDGES[i + 1]))


def qc_report(stats: QCStats, tissue_mm2: float, cfg: QCConfig) -> dict[str, Any]:
    """{"flags": [...], the statistics they were judged on, the bounds}: summary.json's `qc`."""
    flags: list[str] = []
    median = stats.median_area()
    density = stats.n / tissue_mm2 if tissue_mm2 > 0 else None
    low_fraction = stats.n_low_type / stats.n if stats.n else None
    enough_tissue = tissue_mm2 >= cfg.min_tissue_mm2 and tissue_mm2 > 0
    if enough_tissue and stats.n == 0:
        flags.append("no_nuclei_on_tissue")
    if median is not None and stats.n >= cfg.min_nuclei:
        lo, hi = cfg.median_area_um2
        if median < lo:
            flags.append("median_area_low")
        elif median > hi:
            flags.append("median_area_high")
    if enough_tissue and density is not None and stats.n > 0:
        lo, hi = cfg.density_per_mm2
        if density < lo:
            flags.append("density_low")
        elif density > hi:
            flags.append("density_high")
    if low_fraction is not None and stats.n >= cfg.min_nuclei and low_fraction > cfg.max_low_type_fraction:
        flags.append("low_type_confidence")
    return {
        "flags": flags,
        "median_area_um2": None if median is None else round(median, 2),
        "nuclei_per_mm2": None if density is None else round(density, 2),
        "low_type_fraction": None if low_fraction is None else round(low_fraction, 4),
        "bounds": cfg.model_dump(mode="json"),
    }


def describe(report: dict[str, Any]) -> str:
    """One line for the slide log: each flag with the value that raised it."""
    values = {
        "no_nuclei_on_tissue": "0 nuclei",
        "median_area_low": f"median area {report['median_area_um2']} µm²",
        "median_area_high": f"median area {report['median_area_um2']} µm²",
        "density_low": f"{report['nuclei_per_mm2']} nuclei/mm²",
        "density_high": f"{report['nuclei_per_mm2']} nuclei/mm²",
        "low_type_confidence": f"{report['low_type_fraction']:.0%} of nuclei"
        if report["low_type_fraction"] is not None else "",
    }
    return "; ".join(f"{f} ({values[f]})" for f in report["flags"])
