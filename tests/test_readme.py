"""README claims that follow the code: the install lines, the formats `convert` offers, the
module table (docs/architecture.md), the Python example, and the links between the pages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def test_install_gives_cpu_only_users_the_cpu_torch_index():
    install = README[README.index("## Install"):README.index("## Run")]
    block = re.search(r"```bash\n(.*?)```", install, flags=re.DOTALL).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    assert any(c.startswith("pip install torch") and
               c.endswith("--index-url https://download.pytorch.org/whl/cpu") for c in commands)


def test_convert_row_lists_every_format_of_convert_help():
    from wsi_pipeline.cli.convert import command

    offered = next(p for p in command.params if p.name == "fmt").type.choices
    row = next(line for line in README.splitlines() if line.startswith("| `wsi-pipeline convert"))
    listed = re.search(r"--format (\S+) SRC", row).group(1).split("\\|")
    assert sorted(listed) == sorted(offered)


def test_module_table_matches_the_package_tree():
    """Every package and root module of wsi_pipeline/ has its row, every module of a package is
    named in its row, and nothing named is missing from the tree."""
    root = Path(__file__).resolve().parents[1] / "wsi_pipeline"
    arch = ARCHITECTURE[ARCHITECTURE.index("# Architecture"):ARCHITECTURE.index("## The network")]
    rows = [line for line in arch.splitlines() if line.startswith("| `wsi_pipeline/")]
    packages, root_modules = {}, set()
    for row in rows:
        what, job = row.strip("|").split("|", 1)
        names = re.findall(r"`([^`]+)`", what)
        if names[0].endswith("/"):
            package = names[0].removeprefix("wsi_pipeline/").rstrip("/")
            packages[package] = set(re.findall(r"`(\w+)\.py`", job))
        else:
            root_modules |= {n.removeprefix("wsi_pipeline/") for n in names}
    tree_packages = {p.parent.name for p in root.glob("*/__init__.py")}
    assert set(packages) == tree_packages
    assert root_modules == {p.name for p in root.glob("*.py") if p.name != "__init__.py"}
    for package, named in packages.items():
        modules = {p.stem for p in (root / package).glob("*.py") if p.name != "__init__.py"}
        assert named == modules, package


@pytest.mark.slow
def test_python_example_runs(shared_data, tmp_path, monkeypatch):
    """The README's Python example, as written, on a real image and a real slide: "tile.png" is
    a 256² crop of a CoNSeP image (at 0.25 µm/px, as the example says), "slide.svs" a 512² crop
    of CMU-1-Small-Region (a pyramid TIFF)."""
    from PIL import Image

    from tests.helpers.cohort_fixtures import make_cohort

    api = README[README.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", api, flags=re.DOTALL).group(1)
    slide = sorted(make_cohort(shared_data, tmp_path / "slides").iterdir())[0]
    image = Image.open(shared_data / "consep_patches/train/images/train_3_000.jpg")
    image.crop((0, 0, 256, 256)).save(tmp_path / "tile.png")
    monkeypatch.chdir(tmp_path)
    assert code.count('"slide.svs"') == 1
    namespace: dict = {}
    exec(compile(code.replace('"slide.svs"', repr(str(slide))), "README.md", "exec"), namespace)
    seg, slide_dir = namespace["seg"], namespace["slide_dir"]
    assert len(seg.nuclei) > 10 and (tmp_path / "tile.csv").is_file()
    assert (slide_dir / "nuclei.parquet").is_file() and slide_dir.parent == tmp_path / "out"


def test_links_between_the_pages_lead_somewhere():
    """Every relative link of README.md and docs/*.md names a file that exists and, with
    #anchor, a heading of it (the restructuring moved sections between pages)."""
    def anchors(text: str) -> set[str]:
        heads = [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]
        return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_readme_stays_a_newcomers_page():
    assert len(README.splitlines()) <= 250
    assert "![" in README and (ROOT / "docs" / "img" / "qc_sheet_crop.png").is_file()
