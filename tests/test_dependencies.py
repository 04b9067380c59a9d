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


# -- the floor order (#26 item 4) ----------------------------------------------------------------
#: Packages from the lowest floor up; a module may import (at run time, at any depth: module
#: level or inside a function) only from its own package and lower floors. "root" is the shared
#: helpers at wsi_pipeline/*.py (contract, atomic, stain ...); the API and the CLI are the top.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("root",),
    ("io", "model"),
    ("inference",),
    ("postproc",),
    ("evaluation",),
    ("datasets",),
    ("training",),
    ("export",),
    ("tile_mode", "cohort"),
    ("api",),
    ("cli",),
)
#: The arrows that still point up, each a setting or a type that lives in the wrong package
#: (in the training/evaluation area, whose owner moves them); a moved one must leave this list,
#: and no new one may join it.
KNOWN_UPWARD = {
    ("wsi_pipeline/evaluation/oracle.py", "datasets"),  # hv_maps (the HV targets)
    ("wsi_pipeline/evaluation/scoring.py", "datasets"),  # Sample, DATASET_KEY
}


def _package(module: str, importer: bool = False) -> str:
    """The package of `module`; the package's own __init__ is the API's (it hands out the API's
    names) as an importer, the root as a target (`import wsi_pipeline` for __version__)."""
    from pathlib import Path

    import wsi_pipeline

    parts = module.split(".")
    if len(parts) < 2:
        return "api" if importer else "root"
    if parts[1] == "api":
        return "api"
    return parts[1] if (Path(wsi_pipeline.__file__).parent / parts[1]).is_dir() else "root"


def _runtime_imports(path) -> set[str]:
    """The wsi_pipeline modules `path` imports, outside `if TYPE_CHECKING:` blocks."""
    import ast

    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("wsi_pipeline"):
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "wsi_pipeline" \
                else [node.module]
            found.update(names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("wsi_pipeline"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def test_imports_point_down_the_floors():
    """No arrow from datasets/ or model/ up to training/, none from evaluation/ above it, none
    from a stage up to the cohort, the API or the CLI (docs/architecture.md)."""
    from pathlib import Path

    import wsi_pipeline

    package_root = Path(wsi_pipeline.__file__).parent
    floor = {name: level for level, names in enumerate(FLOORS) for name in names}
    packages = {p.name for p in package_root.iterdir() if (p / "__init__.py").is_file()}
    assert packages - {"weights"} <= set(floor), "a new package needs its floor in FLOORS"
    upward = set()
    for path in sorted(package_root.rglob("*.py")):
        rel = path.relative_to(package_root.parent)
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        here = _package(module, importer=True)
        for target in _runtime_imports(path):
            there = _package(target)
            if there != here and floor[there] > floor[here]:
                upward.add((rel.as_posix(), there))
    assert upward == KNOWN_UPWARD
