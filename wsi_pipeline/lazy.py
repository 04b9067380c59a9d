"""Package attributes that load on first use (PEP 562), in one place for every package that needs it.

A package whose public names live in heavy modules (torch, scikit-image) lists them as
{name: defining module}; importing the package, or a light sibling module, then imports none of
them until a name is used.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_attributes(package: str, names: dict[str, str]
                    ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(`__getattr__`, `__dir__`) for module `package`: a listed name is imported from its module
    on first use and then kept in the package's namespace, so later look-ups skip the hook."""
    namespace = sys.modules[package].__dict__

    def getattr_(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(names))

    return getattr_, dir_
