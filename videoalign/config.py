"""Typed dataclass configs and their strict merge: defaults < recipe YAML < CLI flags < `--set key=value`.

Every command owns one dataclass (`commands/<cmd>.py::<Name>Config`) with defaults in code and a docstring
(a `#:` comment) per field. `build_config` merges the layers in order and checks every key and type, so a
typo in a recipe or an override fails here, naming the key, before any model loads. Nested dataclasses are
addressed with dotted keys (`--set data.fps=1.0`) or nested mappings in YAML.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """A recipe, flag or override that does not fit the command's config. The message names the key."""


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a YAML recipe into a mapping; an empty file is an empty mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path}: no such file; pass an existing YAML file to --recipe")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"recipe {path}{where}: not valid YAML; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path}: the top level must be a mapping of config keys, got {type(data).__name__}")
    return data


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`["a.b=1", "c=[x, y]"]` -> `{"a.b": 1, "c": ["x", "y"]}`; values are parsed as YAML scalars or lists."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set batch_size=4")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def build_config(cls: type, *layers: dict[str, Any] | None):
    """Merge `layers` (lowest precedence first) onto `cls`'s defaults and return a validated instance.

    Each layer is a mapping of (possibly dotted) keys. Unknown keys and values of the wrong type raise
    ConfigError naming the key. The dataclass's own `__post_init__` then checks cross-field rules.
    """
    values = field_defaults(cls)
    for layer in layers:
        for key, value in (layer or {}).items():
            _set_path(cls, values, str(key), value)
    return _instantiate(cls, values, prefix="")


def config_to_dict(cfg) -> dict[str, Any]:
    """The resolved config as plain YAML-able data (Paths become strings)."""

    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(dataclasses.asdict(cfg))


def write_resolved(cfg, path: str | Path, main: bool = True) -> None:
    """The resolved config of a run as YAML (`resolved_recipe.yaml`), written atomically by the main process."""
    if main:
        from videoalign.data import write_atomic

        write_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


# --- internals -------------------------------------------------------------------------------------------


def field_defaults(cls: type) -> dict:
    """Field defaults as a nested dict, without instantiating `cls` (its __post_init__ checks a whole config)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = None
        out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out


def _field_map(cls: type) -> dict[str, dataclasses.Field]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, f in fields.items():
        f.type = hints[name]
    return fields


def _set_path(cls: type, values: dict, key: str, value: Any, prefix: str = "") -> None:
    parts = key.split(".")
    node, node_cls = values, cls
    for depth, part in enumerate(parts):
        fields = _field_map(node_cls)
        full = prefix + key
        if part not in fields:
            where = (prefix + ".".join(parts[:depth])).rstrip(".") or cls.__name__
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config key {full!r} (no field {part!r} in {where}); known keys: {known}")
        ftype = fields[part].type
        if depth == len(parts) - 1:
            if dataclasses.is_dataclass(ftype):
                if not isinstance(value, dict):
                    raise ConfigError(f"config key {full!r} is a section: give a mapping of its keys, not {value!r}")
                for sub_key, sub_value in value.items():
                    _set_path(ftype, node[part], str(sub_key), sub_value, prefix=f"{prefix}{key}.")
            else:
                node[part] = _coerce(full, ftype, value)
            return
        if not dataclasses.is_dataclass(ftype):
            raise ConfigError(f"config key {prefix + key!r}: {prefix + '.'.join(parts[: depth + 1])} is not a section")
        node, node_cls = node[part], ftype


def _coerce(key: str, ftype: Any, value: Any) -> Any:
    origin = get_origin(ftype)
    args = get_args(ftype)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, arg, value)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[-1] if errors else f"config key {key!r}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"config key {key!r}: {value!r} is not one of {choices}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return [_coerce(key, inner, v) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {value!r}")
        return value
    if ftype is Any:
        return value
    if ftype is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"config key {key!r}: expected true or false, got {value!r}")
    if ftype is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}") from None
    if ftype is float:
        if isinstance(value, bool):
            raise ConfigError(f"config key {key!r}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key {key!r}: expected a number, got {value!r}") from None
    if ftype is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"config key {key!r}: expected a string, got {value!r}")
        return str(value)
    if ftype is Path:
        return str(value)
    if value is None:
        raise ConfigError(f"config key {key!r}: a value is required")
    return value


def _instantiate(cls: type, values: dict, prefix: str):
    kwargs = {}
    for name, f in _field_map(cls).items():
        v = values[name]
        if dataclasses.is_dataclass(f.type) and isinstance(v, dict):
            v = _instantiate(f.type, v, prefix + name + ".")
        kwargs[name] = v
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from None
