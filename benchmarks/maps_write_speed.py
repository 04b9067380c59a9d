"""Writing maps.zarr chunks: zarr's empty-chunk check against the compression itself.

    python benchmarks/maps_write_speed.py --maps SLIDE_DIR/maps.zarr [--chunks 8] [--repeats 3]

Inference's writer (`inference.slide._ChunkWriter`) flushes one whole chunk of every map array
when the last tile run touching it is done. zarr, by default (`write_empty_chunks` False),
first compares each chunk with the fill value (numpy `array_equal` over the whole chunk) so as
to skip storing empty ones; the writer never flushes an empty chunk, so that pass only costs.
This script takes the first `--chunks` inferred chunks of an existing maps.zarr (e.g. from
`benchmarks/wsi_throughput.py --workdir DIR`: DIR/out/<slide>/maps.zarr), writes each into fresh
arrays with the same shape, chunking and codec as the source, once with the check and once
without, alternately, and prints ms per chunk for each array, the raw Blosc encode time of the
same bytes (numcodecs, one thread) for scale, and the ratio. It also checks that both stores read
back identical to the source.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from numcodecs import Blosc

from wsi_pipeline.contract import ARRAY_HV, ARRAY_INFERRED, ARRAY_NC, ARRAY_NS

ARRAYS = (ARRAY_NS, ARRAY_HV, ARRAY_NC, ARRAY_INFERRED)


def _inferred_chunks(group: zarr.Group, n: int) -> list[tuple[slice, slice]]:
    inferred = group[ARRAY_INFERRED]
    ch, cw = inferred.chunks
    h, w = inferred.shape
    found = []
    for r0 in range(0, h, ch):
        for c0 in range(0, w, cw):
            sel = (slice(r0, min(r0 + ch, h)), slice(c0, min(c0 + cw, w)))
            if np.asarray(inferred[sel]).any():  # a chunk the writer flushed
                found.append(sel)
                if len(found) == n:
                    return found
    return found


def _blocks(group: zarr.Group, sel: tuple[slice, slice]) -> dict[str, np.ndarray]:
    out = {}
    for name in ARRAYS:
        a = group[name]
        out[name] = np.asarray(a[sel] if a.ndim == 2 else a[(slice(None), *sel)])
    return out


def _write(dst: Path, src: zarr.Group, blocks: list[dict[str, np.ndarray]],
           check_empty: bool) -> dict[str, float]:
    """Seconds per array to write every block into a fresh array laid out like the source."""
    shutil.rmtree(dst, ignore_errors=True)
    out = zarr.open_group(str(dst), mode="w", zarr_format=3)
    seconds = dict.fromkeys(ARRAYS, 0.0)
    for name in ARRAYS:
        a = src[name]
        lead = a.shape[:-2]
        ch, cw = a.chunks[-2:]
        shape = (*lead, ch, cw * len(blocks))
        out.create_array(name, shape=shape, chunks=a.chunks, dtype=a.dtype,
                         fill_value=a.fill_value, compressors=a.compressors)
        # reopened as the writer reopens it: the runtime config is not stored with the array
        b = out[name].with_config({"write_empty_chunks": not check_empty})
        for k, blk in enumerate(blocks):
            data = blk[name]
            sel = (*(slice(None),) * len(lead), slice(0, data.shape[-2]),
                   slice(k * cw, k * cw + data.shape[-1]))
            t0 = time.perf_counter()
            b[sel] = data
            seconds[name] += time.perf_counter() - t0
    return seconds


def _same(dst: Path, blocks: list[dict[str, np.ndarray]], chunk_w: int) -> bool:
    g = zarr.open_group(str(dst), mode="r")
    for k, blk in enumerate(blocks):
        for name, data in blk.items():
            got = np.asarray(g[name][..., : data.shape[-2], k * chunk_w : k * chunk_w + data.shape[-1]])
            if not np.array_equal(got, data):
                return False
    return True


def _encode_ms(blocks: list[dict[str, np.ndarray]], src: zarr.Group) -> dict[str, float]:
    Blosc.use_threads = False
    ms = {}
    for name in ARRAYS:
        codec_cfg = src[name].compressors[0]
        shuffle = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE,
                   "bitshuffle": Blosc.BITSHUFFLE}[str(codec_cfg.shuffle.value)]
        codec = Blosc(cname=str(codec_cfg.cname.value), clevel=int(codec_cfg.clevel), shuffle=shuffle)
        t0 = time.perf_counter()
        for blk in blocks:
            codec.encode(np.ascontiguousarray(blk[name]))
        ms[name] = 1000 * (time.perf_counter() - t0) / len(blocks)
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--maps", type=Path, required=True, help="an existing maps.zarr")
    ap.add_argument("--chunks", type=int, default=8, help="inferred chunks to copy")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    src = zarr.open_group(str(args.maps), mode="r")
    sels = _inferred_chunks(src, args.chunks)
    if not sels:
        raise SystemExit(f"{args.maps}: no chunk was inferred")
    blocks = [_blocks(src, sel) for sel in sels]
    chunk_w = src[ARRAY_NS].chunks[-1]
    totals = {True: dict.fromkeys(ARRAYS, 0.0), False: dict.fromkeys(ARRAYS, 0.0)}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for check in (True, False):
                dst = Path(tmp) / f"check_{check}.zarr"
                for name, s in _write(dst, src, blocks, check).items():
                    totals[check][name] += s
                if not _same(dst, blocks, chunk_w):
                    raise SystemExit(f"{dst}: does not read back as the source")
    encode = _encode_ms(blocks, src)
    n = args.repeats * len(blocks)
    print(f"# {args.maps}: {len(blocks)} chunks of {src[ARRAY_NS].chunks}, {args.repeats} repeats; "
          "both stores read back identical to the source")
    print("| array | with empty check ms/chunk | without | ratio | Blosc encode alone |")
    print("|---|---|---|---|---|")
    rows = [(name, totals[True][name], totals[False][name], encode[name]) for name in ARRAYS]
    rows.append(("all", sum(totals[True].values()), sum(totals[False].values()), sum(encode.values())))
    for name, with_check, without, enc in rows:
        print(f"| {name} | {1000 * with_check / n:.1f} | {1000 * without / n:.1f} | "
              f"{with_check / without:.2f}x | {enc:.1f} |")


if __name__ == "__main__":
    main()
