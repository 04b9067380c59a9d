"""`RunConfig`: everything one `wsi-pipeline run` needs, loaded from one YAML file.

The stage sections are the stage modules' own models, so a key is documented and validated in
exactly one place; this module adds what only a run has (checkpoint, device, cluster, retries).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wsi_pipeline.cohort.discover import SLIDE_EXTENSIONS
from wsi_pipeline.config import ConfigError, load_config
from wsi_pipeline.export.config import ExportConfig
from wsi_pipeline.inference.config import InferConfig
from wsi_pipeline.io import ReaderName
from wsi_pipeline.postproc.config import ChunkingConfig, PostprocConfig

__all__ = ["ClusterConfig", "ConfigError", "RunConfig", "load_run_config"]

#: InferConfig fields that change how fast maps are made, not what they contain.
EXECUTION_KNOBS = ("device", "batch_size", "reader_threads")


class ClusterConfig(BaseModel):
    """How slides are scheduled: an embedded Dask cluster, an existing one, or in this process."""

    model_config = ConfigDict(extra="forbid")

    scheduler: str | None = Field(
        None, description="tcp://HOST:PORT of a running `dask scheduler`; None = embedded cluster"
    )
    workers: int | None = Field(
        None, ge=0,
        description="CPU workers of the embedded cluster (besides one inference worker per GPU); "
        "None = sized to the machine; 0 = run everything in this process, no cluster",
    )
    threads_per_worker: int | None = Field(None, ge=1, description="None = sized to the machine")
    infer_threads: int | None = Field(
        None, ge=1,
        description="threads (torch) and streams (OpenVINO) of each inference worker, set inside the "
        "worker; None = the cores it was given: the embedded cluster's plan, else the worker's "
        "WSI_PIPELINE_INFER_THREADS, its SLURM/PBS allocation or its CPU affinity",
    )
    memory_limit: str = Field("auto", description="per worker, e.g. '8GiB'; 'auto' splits RAM")
    infer_resource: str = Field(
        "GPU", description="Dask worker resource an inference task needs one unit of "
        "(start external GPU workers with `dask worker --resources GPU=1`)",
    )
    retries: int = Field(
        2, ge=0, description="times a slide's task is rerun after its worker died (OOM, node lost)"
    )
    dashboard: bool = Field(True, description="serve the Dask dashboard of the embedded cluster")
    connect_timeout_s: float = Field(
        30.0, gt=0, description="how long to wait for an external scheduler and its first worker"
    )
    check_shared_storage: bool = Field(
        True, description="with an external scheduler, check every worker sees the input and output"
    )

    @field_validator("scheduler")
    @classmethod
    def _scheduler_address(cls, v: str | None) -> str | None:
        if v is not None and "://" not in v:
            raise ValueError("must be an address like tcp://HOST:PORT")
        return v


class DiscoveryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    extensions: list[str] = Field(
        list(SLIDE_EXTENSIONS), description="file extensions treated as slides in a folder"
    )
    probe_unknown: bool = Field(
        False, description="also ask OpenSlide about files with other extensions (slow on big trees)"
    )
    reader: ReaderName = Field(
        "auto", description=f"slide reader, one of {', '.join(get_args(ReaderName))}: auto = "
        "plain images for PNG/JPEG/BMP, OpenSlide for the rest (plain image for TIFFs it refuses); "
        "tiatoolbox needs the optional extra",
    )


class PreflightConfig(BaseModel):
    """Checks made before any slide is processed (see wsi_pipeline.cohort.preflight)."""

    model_config = ConfigDict(extra="forbid")

    mpp_range: tuple[float, float] = Field(
        (0.1, 2.0), description="plausible level-0 µm/px; slides outside it are refused unless "
        "allow_unusual_mpp (40× scans ≈ 0.25, 20× ≈ 0.5)",
    )
    allow_unusual_mpp: bool = Field(
        False, description="process slides whose pixel size is outside mpp_range (--allow-unusual-mpp)"
    )
    open_threads: int = Field(4, ge=1, description="slides opened at once while checking them")
    disk_check: Literal["refuse", "warn", "off"] = Field(
        "refuse", description="free space on the output's disk against the maps the run will write: "
        "refuse = stop when even a small tissue share would not fit, warn = only say so",
    )
    disk_mb_per_mm2: float = Field(
        90.0, gt=0, description="maps.zarr MB per mm² of tissue for a model at 0.25 µm/px "
        "(scaled with the square of the model's pixel size)",
    )
    disk_min_tissue_fraction: float = Field(
        0.2, gt=0, le=1, description="disk_check refuses when the maps would not fit even if only "
        "this share of the slides' scanned area were tissue (it warns when the whole area would not)",
    )

    @field_validator("mpp_range")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] < v[1]:
            raise ValueError("must be [low, high] with 0 < low < high")
        return v


class RunConfig(BaseModel):
    """One run: the model, the per-stage settings, and how to schedule the slides."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: Path | None = Field(None, description="model checkpoint; None = the shipped weights")
    mpp: float | None = Field(
        None, gt=0, description="fallback level-0 µm/px, used only for slides whose file carries no "
        "pixel size (the file's metadata wins)",
    )
    mpp_override: float | None = Field(
        None, gt=0, description="level-0 µm/px for every slide, whatever its metadata says (for wrong "
        "metadata); a slide list's mpp column still wins for its slides",
    )
    infer: InferConfig = Field(default_factory=InferConfig)
    postproc: PostprocConfig = Field(default_factory=PostprocConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)
    preflight: PreflightConfig = Field(default_factory=PreflightConfig)
    retry_failed: bool = Field(False, description="rerun slides that failed in an earlier run")
    summarize: bool = Field(True, description="write cohort_summary.parquet at the end of a run")

    def stage_configs(self, mpp: float | None = None) -> dict[str, Any]:
        """What each stage's output depends on, for the stage hashes.

        `mpp` is the pixel size the user chose for the slide (fallback, override or CSV; None
        where it is the file's own, which the slide's fingerprint already covers): a flag that
        does not change a slide's pixel size does not redo it. Execution knobs (device, batch
        size, threads) are left out: changing them, or running on another machine with
        `device: auto`, does not redo finished slides.
        """
        infer = self.infer.model_dump(mode="json", exclude=set(EXECUTION_KNOBS))
        return {
            "infer": {"infer": infer, "mpp": mpp},
            "postproc": {"postproc": self.postproc.settings(),
                         "chunking": self.chunking.model_dump(mode="json", exclude={"workers"})},
            "export": self.export.settings(),
        }


def load_run_config(path: str | Path | None, overrides: dict | None = None) -> RunConfig:
    """YAML at `path` (None = defaults) plus CLI `overrides`; errors name the file and dotted key.

    A relative `checkpoint` in the file is taken relative to the file, so configs can travel
    with their weights.
    """
    cfg = load_config(path, RunConfig, overrides)
    if path is not None and cfg.checkpoint is not None and not cfg.checkpoint.is_absolute():
        from_cli = bool(overrides and overrides.get("checkpoint") is not None)
        if not from_cli:
            cfg = cfg.model_copy(update={"checkpoint": (Path(path).parent / cfg.checkpoint).resolve()})
    return cfg


DEFAULT_YAML_HEADER = """\
# Default settings of `wsi-pipeline run` (every key, with its default value).
# Generated: python -c "from wsi_pipeline.cohort.config import default_yaml; print(default_yaml(), end='')"
# Copy this file, change what you need, pass it with --config; unknown keys are errors.
# Sizes that depend on magnification are in microns (µm, µm²) and converted with the pixel size.
# Changing a key under infer/postproc/chunking/export redoes that stage and the ones after it on
# the next run; cluster/discovery/preflight keys and infer.device/batch_size/reader_threads never do.
# mpp is a fallback for slides whose files carry no pixel size; mpp and mpp_override redo only the
# slides whose pixel size they change (docs/troubleshooting.md: "Pixel size (mpp)").
"""


def default_config_path() -> Path:
    """configs/run_default.yaml as installed with the package (wsi_pipeline/configs/): every
    key and its default, to copy and edit, also where only the wheel is installed."""
    return Path(__file__).resolve().parents[1] / "configs" / "run_default.yaml"


def default_yaml() -> str:
    """configs/run_default.yaml: the defaults of every key, as YAML."""
    import yaml

    body = yaml.safe_dump(RunConfig().model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    return DEFAULT_YAML_HEADER + body
