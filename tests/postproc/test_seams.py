"""Chunk windows and the seam ownership rule: every nucleus reported by exactly one chunk."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

from tests.helpers.maps_synth import disc_instances, oracle_maps, write_maps_zarr
from wsi_pipeline.postproc.chunks import chunk_windows
from wsi_pipeline.postproc.config import ChunkingConfig, PostprocConfig
from wsi_pipeline.postproc.seams import nucleus_ids, owned_nuclei
from wsi_pipeline.postproc.slide import postprocess_slide


def test_chunk_cores_tile_the_map_and_windows_add_the_clipped_halo():
    windows = chunk_windows((1000, 700), (256, 256), halo_px=40)
    cover = np.zeros((1000, 700), dtype=np.int32)
    for w in windows:
        cover[w.core] += 1
        assert w.win_r0 == max(0, w.core_r0 - 40) and w.win_c1 == min(700, w.core_c1 + 40)
    assert (cover == 1).all()
    assert [w.index for w in windows] == list(range(len(windows)))


def _owners(inst: np.ndarray, chunk: int, halo: int) -> list[tuple[int, int]]:
    """(chunk index, nucleus id) for every owned nucleus, windows cut from the full map."""
    found = []
    for win in chunk_windows(inst.shape, (chunk, chunk), halo):
        local = inst[win.window]
        _ids, relabelled = np.unique(local, return_inverse=True)
        relabelled = relabelled.reshape(local.shape).astype(np.int32)
        owned = owned_nuclei(relabelled, win, inst.shape)
        found += [(win.index, int(i)) for i in nucleus_ids(owned, inst.shape[1])]
    return found


def test_straddling_and_corner_nuclei_have_exactly_one_owner():
    # Seam between chunks at 64; one disc centred on a vertical seam, one on a 4-chunk corner,
    # one whose centroid is exactly on a seam line (row 64.0), one inside a core.
    inst = disc_instances((128, 128), [(20, 64), (64, 64), (64, 100), (100, 20)], radius=9)
    owners = _owners(inst, chunk=64, halo=24)
    ids = [i for _, i in owners]
    assert len(ids) == 4 and len(set(ids)) == 4
    # The id encodes the centroid: the same as when the map is one chunk.
    assert sorted(ids) == sorted(i for _, i in _owners(inst, chunk=128, halo=24))
    # Centroid (64.0, 64.0) lies on the corner: the half-open rule gives it to the lower-right core.
    corner_id = 4 * 64 * (4 * 128) + 4 * 64
    assert (3, corner_id) in owners


def test_nucleus_cut_by_a_too_small_halo_is_counted_not_reported():
    # Radius 20 > halo 8: the owner (core rows 64..128) sees it cut at its window's top edge.
    inst = disc_instances((128, 128), [(64, 60)], radius=20)
    owned = [
        owned_nuclei(inst[w.window].copy(), w, inst.shape)
        for w in chunk_windows(inst.shape, (64, 64), halo_px=8)
    ]
    assert sum(o.labels.size for o in owned) == 0
    # Every chunk that sees a piece whose centroid falls in its core flags it.
    assert sum(o.n_edge_cut for o in owned) >= 1


@pytest.mark.parametrize("chunk", [96, 256])
def test_seam_and_corner_nuclei_counted_once_through_segmentation(tmp_path, chunk):
    # Discs of radius 6 px (1.5 µm at 0.25 mpp) centred on seams of the 96-px grid and on
    # 4-chunk corners; the 256-px run has no seams there: both must give the same nuclei.
    centres = [(96, 96), (96, 150), (40, 192), (192, 192), (150, 40), (230, 230)]
    inst = disc_instances((256, 256), centres, radius=12)
    types = np.where(inst > 0, 3, 0).astype(np.uint8)
    maps_path = write_maps_zarr(tmp_path / "maps.zarr", oracle_maps(inst, types), chunk)
    # As infer_slide writes it: level-0 pixel coordinate of map pixel (0, 0)'s centre.
    scale = 0.5
    origin = (scale - 1) / 2
    zarr.open_group(str(maps_path), mode="r+").attrs["origin"] = [origin, origin]
    res = postprocess_slide(
        maps_path, tmp_path / "nuclei.parquet", PostprocConfig(), progress=False,
        chunking=ChunkingConfig(halo_um=10.0),
    )
    table = pq.read_table(tmp_path / "nuclei.parquet").to_pandas()
    assert res.n_nuclei == len(centres) == len(table)
    assert res.n_edge_cut == 0
    # Level-0 centroid = origin + map centroid * scale, one per disc: the map pixel centre
    # (c + 0.5) * scale in continuous level-0 coordinates, i.e. pixel coordinate
    # c * scale + (scale - 1) / 2 (a quarter level-0 pixel from c * scale at this scale).
    got = np.array(sorted(map(tuple, table[["y", "x"]].to_numpy())))
    want = np.array(sorted((origin + r * scale, origin + c * scale) for r, c in centres))
    np.testing.assert_allclose(got, want, atol=0.01)
    assert table["nucleus_id"].is_unique
