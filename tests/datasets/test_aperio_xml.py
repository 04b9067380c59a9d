from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsi_pipeline.datasets.aperio_xml import read_aperio_xml, read_monuseg
from wsi_pipeline.datasets.validate import SampleError


def _xml(regions: list[list[tuple[float, float]]], mpp: str = "0.2527") -> str:
    body = "".join(
        f'<Region Id="{i}"><Vertices>'
        + "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in r)
        + "</Vertices></Region>"
        for i, r in enumerate(regions, 1)
    )
    return (f'<Annotations MicronsPerPixel="{mpp}"><Annotation Id="1"><Regions>{body}'
            "</Regions></Annotation></Annotations>")


def test_real_monuseg(shared_data: Path) -> None:
    samples = read_monuseg(shared_data / "monuseg_train")
    assert len(samples) == 13
    assert all(s.image.shape == (1000, 1000, 3) and s.type_map is None for s in samples)
    first = samples[0]
    assert first.name == "TCGA-21-5784-01Z-00-DX1" and first.mpp == pytest.approx(0.2527)
    assert int(first.inst_map.max()) == first.meta["regions"] == 398
    # the one XML without MicronsPerPixel falls back to MoNuSeg's 40x
    assert samples[-1].meta["xml_mpp"] is None and samples[-1].mpp == 0.25
    # instances are dark (haematoxylin) against the rest of the tile
    grey = first.image.mean(axis=2)
    assert grey[first.inst_map > 0].mean() < grey[first.inst_map == 0].mean() - 30


def test_aperio_xml_layout_rules(tmp_path: Path) -> None:
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Tissue_Images").mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "Tissue_Images" / "a.tif")
    (tmp_path / "Annotations" / "a.xml").write_text(
        _xml([[(2, 2), (8, 2), (8, 8), (2, 8)], [(5, 5), (12, 5), (12, 12), (5, 12)]]))
    (s,) = read_monuseg(tmp_path)
    assert s.inst_map.shape == (20, 30) and int(s.inst_map.max()) == 2
    assert s.inst_map[6, 6] == 2  # later region drawn over the earlier one
    ann = read_aperio_xml(tmp_path / "Annotations" / "a.xml")
    assert ann.mpp == pytest.approx(0.2527) and len(ann.regions) == 2
    # an annotation of a larger image than the one beside it is refused, naming the file
    (tmp_path / "Annotations" / "a.xml").write_text(_xml([[(200, 200), (208, 200), (208, 208)]]))
    with pytest.raises(SampleError, match="a.xml: polygon 1 .* outside the 30x20 image"):
        read_monuseg(tmp_path)
    (tmp_path / "Annotations" / "a.xml").write_text(_xml([]))
    with pytest.raises(SampleError, match="a.xml: no nucleus regions"):
        read_monuseg(tmp_path)
    (tmp_path / "Annotations" / "a.xml").write_text("<html/>")
    with pytest.raises(SampleError, match="a.xml: root element is <html>"):
        read_monuseg(tmp_path)
