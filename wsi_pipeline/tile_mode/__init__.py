"""Tile mode (`predict-tiles`): one plain image in, HoVer-Net style outputs out.

The slide pipeline's model and post-processing applied to a whole image in memory (`predict`),
with the output names planned before any work so that nothing overwrites an input (`outputs`).
No maps.zarr, no slide folder: an entry point beside the pipeline, not a stage of it.
"""
