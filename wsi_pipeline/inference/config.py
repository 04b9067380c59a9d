"""Parameters of the slide -> maps.zarr stage (`infer_slide`), tissue detection included."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The default tile geometry of inference, in pixels at the model's mpp: the one home of these
# numbers for slides (InferConfig), tile mode, training validation and the benchmarks.
#: network input side
DEFAULT_TILE_SIZE = 256
#: least distance of a used output pixel from the border of its tile
DEFAULT_MARGIN = 32
#: tile step: each tile contributes its central DEFAULT_STRIDE² crop
DEFAULT_STRIDE = DEFAULT_TILE_SIZE - 2 * DEFAULT_MARGIN
#: Map chunk side: a whole number of strides, so that no tile's crop straddles two chunk rows
#: (such a tile runs once per row, `tiling`): with 2048 = 10.7 strides, 8 % of a slide's tiles
#: ran twice. Tables do not depend on the chunk size (exact seams, tests/postproc/test_seams.py).
DEFAULT_CHUNK_SIZE = 10 * DEFAULT_STRIDE


class TissueConfig(BaseModel):
    """Tissue detection parameters; sizes in microns so they hold at any magnification."""

    model_config = ConfigDict(extra="forbid")

    thumb_mpp: float = Field(
        8.0, gt=0, description="pixel size (µm) of the thumbnail the mask is computed on")
    otsu_fraction: float = Field(
        0.5, gt=0, le=1, description="saturation threshold = this x Otsu's threshold")
    min_saturation: float = Field(0.05, ge=0, le=1, description="floor on the saturation threshold")
    min_optical_density: float = Field(
        0.05, ge=0, description="mean RGB optical density a tissue pixel must exceed")
    min_object_um2: float = Field(
        20_000.0, ge=0, description="tissue pieces smaller than this are specks: removed")
    max_hole_um2: float = Field(
        4_000.0, ge=0,
        description="enclosed holes up to this area are filled (pale spots, capillary lumens); larger "
        "ones (clefts, tears, big lumens) stay holes and are not counted as tissue")
    dilate_um: float = Field(24.0, ge=0, description="margin added around tissue so edge nuclei are inferred")


class InferConfig(BaseModel):
    """Tile grid, batching, parallelism and output chunking of slide inference.

    Tiles are `tile_size` pixels at the model's mpp; each contributes its central
    `stride` x `stride` crop, so every output pixel is at least `margin` pixels from the
    border of the tile that produced it. `stride` defaults to `tile_size - 2 * margin`.
    """

    model_config = ConfigDict(extra="forbid")

    tile_size: int = Field(DEFAULT_TILE_SIZE, ge=32, multiple_of=32,
                           description="model input side (px at model mpp)")
    margin: int = Field(DEFAULT_MARGIN, ge=0,
                        description="min distance (px) of a used output pixel from its tile border")
    stride: int | None = Field(None, ge=1, description="tile step; default tile_size - 2 * margin")
    batch_size: int = Field(16, ge=1, description="tiles per forward pass")
    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, ge=64,
                            description="spatial zarr chunk side (px at model mpp)")
    reader_threads: int = Field(4, ge=1, description="threads reading and resampling tiles")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when available")
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = Field(
        "auto", description="auto = bf16 autocast on CPUs with native bf16, fp16/bf16 on CUDA; int8 = "
        "the checkpoint's quantised network (wsi-pipeline quantize-model), OpenVINO only, ~2x bf16")
    backend: Literal["auto", "torch", "openvino"] = Field(
        "auto", description="auto = OpenVINO on the CPU where installed (about 2x PyTorch), PyTorch on CUDA")
    compressor: Literal["lz4", "zstd"] = Field(
        "lz4", description="Blosc codec of the zarr chunks: lz4 compresses a 1920² chunk ~6x faster "
        "than zstd (the writer shares the CPU with the network), maps ~35 % larger")
    compression_level: int = Field(5, ge=0, le=9, description="Blosc compression level of the zarr chunks")
    tissue: TissueConfig = Field(default_factory=TissueConfig)

    @model_validator(mode="after")
    def _check_geometry(self) -> InferConfig:
        if self.tile_size - 2 * self.margin < 1:
            raise ValueError(f"margin {self.margin} leaves no crop in a {self.tile_size}px tile")
        if self.stride is not None and self.stride > self.tile_size - 2 * self.margin:
            raise ValueError(
                f"stride {self.stride} > tile_size - 2*margin = {self.tile_size - 2 * self.margin}: "
                "some output pixels would lie closer than `margin` to their tile border")
        return self

    @property
    def effective_stride(self) -> int:
        return self.stride if self.stride is not None else self.tile_size - 2 * self.margin
