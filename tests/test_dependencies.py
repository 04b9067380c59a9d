"""Dependencies point one way (#13 item 5): runtime modules do not pull in the training-data
package, and the cohort's stage bookkeeping does not pull in torch."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("module", ["wsi_pipeline.infer", "wsi_pipeline.tile_mode",
                                    "wsi_pipeline.stain"])
def test_inference_does_not_import_the_training_data(module):
    loaded = _loaded_after(f"import {module}")
    assert not {m for m in loaded if m.startswith("wsi_pipeline.data")}


def test_stage_bookkeeping_does_not_import_torch():
    loaded = _loaded_after("import wsi_pipeline.cohort.stages, wsi_pipeline.hashing")
    assert "torch" not in loaded


def test_one_reader_does_not_load_the_others_or_torch():
    loaded = _loaded_after("from wsi_pipeline.data.sample import Sample")
    assert "torch" not in loaded and "wsi_pipeline.data.pannuke" not in loaded


def test_data_package_names_still_resolve():
    import wsi_pipeline.data as data
    from wsi_pipeline import stain

    for name in data.__all__:
        assert getattr(data, name) is not None, name
    assert data.build_normalizer is stain.build_normalizer
    with pytest.raises(AttributeError):
        data.no_such_name  # noqa: B018


def test_run_config_does_not_import_the_segmentation_stack():
    """Validating a run's YAML needs the settings' models, not the code that applies them
    (ChunkingConfig lives beside PostprocConfig, TissueConfig beside InferConfig)."""
    loaded = _loaded_after("import wsi_pipeline.cohort.config")
    heavy = {"skimage", "torch", "wsi_pipeline.postproc.watershed", "wsi_pipeline.postproc.chunks",
             "wsi_pipeline.tissue"}
    assert not heavy & loaded
