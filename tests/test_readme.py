"""README claims that follow the code: the install lines and the formats `convert` offers."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


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
    arch = README[README.index("## Architecture"):README.index("### The network")]
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
