"""Loading YAML configs into pydantic models with errors a user can act on.

Every error names the file and the dotted key (`optim.lr: Input should be a valid number`),
and unknown keys are errors rather than silently ignored typos. A value that came from a
command-line flag is reported as that flag (`--workers (cluster.workers): ...`), not as if the
file or the defaults held it: the CLI's overrides use the flag's name as their last key.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


def format_validation_error(exc: ValidationError, source: str, overrides: dict | None = None) -> str:
    """One line per bad key, under the file (or defaults) or the command line it came from."""
    from_file, from_cli = [], []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        if overrides and _given(overrides, err["loc"]):
            flag = "--" + str(err["loc"][-1]).replace("_", "-")
            from_cli.append(f"  {flag} ({key}): {msg}" if "." in key else f"  {flag}: {msg}")
        else:
            from_file.append(f"  {key}: {msg}")
    lines = []
    if from_cli:
        lines += ["invalid command-line option" + ("s" if len(from_cli) > 1 else ""), *from_cli]
    if from_file:
        lines += [f"{source}: invalid configuration", *from_file]
    return "\n".join(lines)


def _given(overrides: dict, loc: tuple) -> bool:
    """Whether the value at `loc` (or the mapping that holds it) came from `overrides`."""
    node: object = overrides
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


class DuplicateKeyError(yaml.YAMLError):
    """A key given twice in one mapping: YAML loaders keep the last and drop the first
    silently (a second `postproc:` section replaced the first one's settings)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key repeated within one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, list | dict):
                continue  # unhashable: the base class reports it
            if key in seen:
                raise DuplicateKeyError(f"duplicate key {key!r} at line {line} (first at line "
                                        f"{seen[key]}): the earlier one would be ignored; merge them")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def safe_load_unique(text: str) -> object:
    """`yaml.safe_load` that raises DuplicateKeyError (naming the key and both lines) for a
    key repeated within one mapping; every config file of the package is read with it."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: builds plain data only


def load_config(path: str | Path | None, model: type[M], overrides: dict | None = None) -> M:
    """Read YAML at `path` (None = defaults), apply `overrides` (nested dict), validate."""
    data: dict = {}
    source = "<defaults>"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            loaded = safe_load_unique(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: config file not found") from exc
        except DuplicateKeyError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of keys to values")
        data = loaded or {}
    if overrides:
        data = _merge(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, overrides)) from exc


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
