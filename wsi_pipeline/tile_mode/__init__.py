"""Tile mode (`predict-tiles`, `wsi_pipeline.load_model().segment`): one plain image in, its
nuclei out.

The slide pipeline's model and post-processing applied to a whole image in memory (`predict`),
with the output names, one file per output format, planned before any work so that nothing
overwrites an input (`outputs`).
No maps.zarr, no slide folder: an entry point beside the pipeline, not a stage of it.
"""
