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
