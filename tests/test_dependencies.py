"""Dependencies point one way (#13 items 5 and 6): the pipeline's stages (inference, postproc,
export, cohort) do not pull in training, its datasets or evaluation; the cohort's stage
bookkeeping does not pull in torch; a stage package's __init__ imports none of its modules."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("module", ["wsi_pipeline.inference.slide", "wsi_pipeline.tile_mode.predict",
                                    "wsi_pipeline.stain"])
def test_inference_does_not_import_the_training_data(module):
    loaded = _loaded_after(f"import {module}")
    assert not {m for m in loaded if m.startswith("wsi_pipeline.datasets")}


@pytest.mark.parametrize("module", ["wsi_pipeline.inference.slide", "wsi_pipeline.postproc.slide",
                                    "wsi_pipeline.export.stage", "wsi_pipeline.cohort.runner"])
def test_pipeline_stages_do_not_import_training_or_evaluation(module):
    loaded = _loaded_after(f"import {module}")
    beside = ("wsi_pipeline.training", "wsi_pipeline.datasets", "wsi_pipeline.evaluation")
    assert not {m for m in loaded if m.startswith(beside)}


@pytest.mark.parametrize("package", ["inference", "tile_mode", "export", "training"])
def test_stage_packages_are_light(package):
    """Importing a stage's package (as `import wsi_pipeline.export.config` does on the way)
    loads none of its modules, so a light sibling stays light."""
    loaded = _loaded_after(f"import wsi_pipeline.{package}")
    assert not {m for m in loaded if m.startswith(f"wsi_pipeline.{package}.")}
    assert "torch" not in loaded


def test_stage_bookkeeping_does_not_import_torch():
    loaded = _loaded_after("import wsi_pipeline.cohort.stages, wsi_pipeline.hashing")
    assert "torch" not in loaded


def test_one_reader_does_not_load_the_others_or_torch():
    loaded = _loaded_after("from wsi_pipeline.datasets.sample import Sample")
    assert "torch" not in loaded and "wsi_pipeline.datasets.pannuke" not in loaded


def test_data_package_names_still_resolve():
    import wsi_pipeline.datasets as data
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
             "wsi_pipeline.inference.tissue"}
    assert not heavy & loaded
