"""Inference, the first stage after reading: a slide in, its network maps out (maps.zarr).

Tissue detection on a thumbnail (`tissue`), the tile and chunk geometry (`geometry`), the model
run over an in-memory image of any size (`image`) and over a whole slide, streamed to Zarr
(`slide`); the stage's settings (`config`) import none of the code, so a run's YAML validates
without torch.
"""
