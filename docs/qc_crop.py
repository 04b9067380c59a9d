"""Make docs/img/qc_sheet_crop.png, the README's picture, from a real run's QC sheet:
its legend and the densest crop (raw | outlined by type).

    wsi-pipeline run ../shared/data/slides/CMU-1-Small-Region.svs -o /tmp/cmu
    python docs/qc_crop.py /tmp/cmu/CMU-1-Small-Region/qc/sheet.png
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

#: (left, top, right, bottom) of the legend and of the first crop pair in a default sheet.png
LEGEND = (0, 0, 800, 80)
DENSEST = (0, 800, 800, 1235)


def main(sheet: Path, out: Path = Path(__file__).parent / "img" / "qc_sheet_crop.png") -> None:
    image = Image.open(sheet).convert("RGB")
    legend, crops = image.crop(LEGEND), image.crop(DENSEST)
    picture = Image.new("RGB", (crops.width, legend.height + crops.height), "white")
    picture.paste(legend, (0, 0))
    picture.paste(crops, (0, legend.height))
    picture.save(out, optimize=True)  # full colour: a palette would merge the legend's colours
    print(f"{out}: {picture.width} x {picture.height} px")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
