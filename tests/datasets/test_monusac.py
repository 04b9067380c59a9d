from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from wsi_pipeline.cli.convert import command as convert
from wsi_pipeline.datasets.common import read_common
from wsi_pipeline.datasets.monusac import MONUSAC_CLASSES, read_monusac
from wsi_pipeline.datasets.validate import SampleError


def _region(rid: int, cx: float, cy: float, r: float) -> str:
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    verts = "".join(f'<Vertex X="{cx + r * np.cos(a):.2f}" Y="{cy + r * np.sin(a):.2f}" Z="0"/>' for a in t)
    return f'<Region Id="{rid}" Type="0"><Attributes/><Vertices>{verts}</Vertices></Region>'


def _annotation(aid: int, cls: str, regions: list[str]) -> str:
    return (f'<Annotation Id="{aid}" Type="4"><Attributes><Attribute Name="{cls}" Id="0" Value=""/>'
            f'</Attributes><Regions><RegionAttributeHeaders/>{"".join(regions)}</Regions></Annotation>')


def _write_patient(root: Path, patient: str, name: str, annotations: list[str], size=(60, 80)) -> None:
    folder = root / patient
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size + (3,), 200, np.uint8)).save(folder / f"{name}.tif")
    (folder / f"{name}.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?><Annotations MicronsPerPixel="0.25">'
        + "".join(annotations) + "</Annotations>")


@pytest.fixture
def monusac_root(tmp_path: Path) -> Path:
    root = tmp_path / "MoNuSAC"
    _write_patient(root, "TCGA-AA-0001", "TCGA-AA-0001_1", [
        _annotation(1, "Epithelial", [_region(1, 20, 15, 6), _region(2, 50, 15, 5)]),
        _annotation(2, "Lymphocyte", [_region(1, 20, 40, 4)]),
        _annotation(3, "Ambiguous", [_region(1, 70, 50, 8)]),
    ])
    _write_patient(root, "TCGA-AA-0001", "TCGA-AA-0001_2", [
        _annotation(1, "Macrophage", [_region(1, 30, 30, 7)]),
        _annotation(2, "Neutrophil", [_region(1, 60, 30, 5)]),
    ])
    _write_patient(root, "TCGA-BB-0002", "TCGA-BB-0002_1",
                   [_annotation(1, "Epithelial", [_region(1, 10, 10, 5)])])
    return root


def test_reads_xml_regions(monusac_root: Path) -> None:
    samples = read_monusac(monusac_root)
    assert [s.name for s in samples] == ["TCGA-AA-0001_1", "TCGA-AA-0001_2", "TCGA-BB-0002_1"]
    s = samples[0]
    assert s.class_names == MONUSAC_CLASSES and s.group == "TCGA-AA-0001" and s.image.shape == (60, 80, 3)
    assert int(s.inst_map.max()) == 3  # the Ambiguous area is not a nucleus
    # vertices are (X=col, Y=row)
    assert s.inst_map[15, 20] == 1 and s.type_map[15, 20] == 1
    assert s.inst_map[15, 50] == 2 and s.inst_map[40, 20] == 3 and s.type_map[40, 20] == 2
    assert s.inst_map[50, 70] == 0
    assert sorted(np.unique(samples[1].type_map)) == [0, 3, 4]


def test_unknown_class_named(monusac_root: Path) -> None:
    _write_patient(monusac_root, "TCGA-CC-0003", "TCGA-CC-0003_1",
                   [_annotation(1, "Mitosis", [_region(1, 9, 9, 4)])])
    with pytest.raises(SampleError, match=r"TCGA-CC-0003_1\.xml.*Mitosis"):
        read_monusac(monusac_root)
    assert len(read_monusac(monusac_root, on_error="skip")) == 3


def test_convert_round_trip(monusac_root: Path, tmp_path: Path) -> None:
    dst = tmp_path / "common"
    result = CliRunner().invoke(convert, ["--format", "monusac", str(monusac_root), str(dst)])
    assert result.exit_code == 0, result.output
    assert "wrote 3 samples" in result.output
    back = read_common(dst)
    orig = read_monusac(monusac_root)
    for a, b in zip(orig, back, strict=True):
        assert a.name == b.name and a.group == b.group and a.mpp == b.mpp
        assert np.array_equal(a.image, b.image) and np.array_equal(a.inst_map, b.inst_map)
        assert np.array_equal(a.type_map, b.type_map) and b.class_names == MONUSAC_CLASSES
    assert not list(dst.rglob(".*tmp*"))
