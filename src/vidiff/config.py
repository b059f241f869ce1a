"""TOML files mapped onto nested dataclasses, with `key.sub=value` command-line overrides.

A config is a tree of dataclasses. `load_config(Cls, "configs/x.toml", ["train.lr=1e-4"])`
reads the file, applies the overrides, coerces every value to the type annotated on its field
(`int`, `float`, `bool`, `str`, `Literal[...]`, `X | None`, `tuple[...]`, `list[...]`,
`dict[str, ...]`, nested dataclasses) and builds the tree. Unknown keys are rejected with the
full dotted key and the file it came from, so a typo never silently trains the wrong model.
`config_to_dict` goes the other way (for `config.json` in checkpoints).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, TypeVar, Union

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "parse_overrides",
    "apply_overrides",
    "dumps_json",
    "changed_keys",
]


class ConfigError(ValueError):
    """A config file, dict or override does not fit its dataclass (names key and source)."""


class _FromCommandLine(str):
    """An override value as typed by the user: parsed according to the field's type."""


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """Turn `["train.lr=1e-4", "model.depth=4"]` into a nested dict of raw strings."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {part!r}")
            node = child
        node[parts[-1]] = _FromCommandLine(value.strip())
    return nested


def apply_overrides(data: dict[str, Any], overrides: Iterable[str] | dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `data` with the overrides merged in (overrides win, tables merge)."""
    patch = parse_overrides(overrides) if not isinstance(overrides, dict) else overrides

    def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
        return out

    return merge(data, patch)


def load_config(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """Build dataclass `cls` from a TOML file (optional) plus `key.sub=value` overrides."""
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {source} does not exist") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {source} is not valid TOML: {err}") from None
    overrides = list(overrides)
    if overrides:
        data = apply_overrides(data, overrides)
        source = f"{source} + command-line overrides" if path is not None else "command-line overrides"
    return config_from_dict(cls, data, source=source)


def dataclass_from_dict(cls: type[T], data: dict[str, Any], *, ignore: Iterable[str] = ()) -> T:
    """`cls(**data)` for a flat config read back from JSON (e.g. a model's config.json): keys in
    `ignore` are dropped, any other key that is not a field raises ValueError naming it."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known - set(ignore))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s) {unknown}; known keys: {sorted(known)}")
    return cls(**{k: v for k, v in data.items() if k in known})


def config_from_dict(cls: type[T], data: dict[str, Any], *, source: str = "<dict>", prefix: str = "") -> T:
    """Build dataclass `cls` from a nested dict, coercing values to the annotated field types.

    Raises ConfigError naming the dotted key and `source` for unknown keys, wrong types and
    values rejected by the dataclass's own `__post_init__` validation.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, dict):
        raise ConfigError(f"{_where(prefix, source)}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [key for key in data if key not in fields]
    if unknown:
        key = prefix + unknown[0]
        known = ", ".join(sorted(fields))
        raise ConfigError(f"unknown key {key!r} in {source} (known keys here: {known})")
    kwargs = {name: _coerce(data[name], hints[name], prefix + name, source) for name in data}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        where = f"[{prefix[:-1]}] in {source}" if prefix else source
        raise ConfigError(f"invalid config {where}: {err}") from None


def config_to_dict(obj: Any) -> Any:
    """A dataclass tree as plain JSON/TOML-friendly data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [config_to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): config_to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _where(key: str, source: str) -> str:
    return f"key {key.rstrip('.')!r} in {source}" if key else source


def _parse_literal(text: str) -> Any:
    """Parse a command-line value as a TOML value when it is one, else keep the text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return str(text)


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(expected: str) -> ConfigError:
        shown = str(value) if isinstance(value, _FromCommandLine) else repr(value)
        return ConfigError(f"key {key!r} in {source}: expected {expected}, got {shown}")

    if tp is Any:
        return _parse_literal(value) if isinstance(value, _FromCommandLine) else value
    if origin in (Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(value, option, key, source)
            except ConfigError as err:
                errors.append(err)
        raise errors[0] if len(errors) == 1 else fail(" or ".join(_type_name(a) for a in args))
    if origin is Literal:
        for choice in args:
            if isinstance(value, str) and str(choice) == str(value) and type(choice) is str:
                return choice
            if not isinstance(value, _FromCommandLine) and value == choice and type(value) is type(choice):
                return choice
            if isinstance(value, _FromCommandLine) and _parse_literal(value) == choice:
                return choice
        raise fail("one of " + ", ".join(repr(c) for c in args))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise fail(f"a table of {tp.__name__} settings")
        return config_from_dict(tp, value, source=source, prefix=key + ".")
    if origin in (tuple, list) or tp in (tuple, list):
        if isinstance(value, _FromCommandLine):
            parsed = _parse_literal(value)
            value = parsed if isinstance(parsed, list) else [_FromCommandLine(v.strip()) for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise fail(f"a list ({_type_name(tp)})")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise fail(f"{len(args)} values ({_type_name(tp)})")
            return tuple(_coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if isinstance(value, _FromCommandLine):
            value = _parse_literal(value)
        if not isinstance(value, dict):
            raise fail("a table")
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, val_tp, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, _FromCommandLine) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise fail("true or false")
    if tp is int:
        if isinstance(value, _FromCommandLine):
            value = _parse_literal(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise fail("an integer")
    if tp is float:
        if isinstance(value, _FromCommandLine):
            value = _parse_literal(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise fail("a number")
    if tp is str:
        if isinstance(value, str):
            return str(value)
        raise fail("a string")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise fail("a path")
    # An annotation this loader does not know (a user type): pass the value through unchanged.
    return _parse_literal(value) if isinstance(value, _FromCommandLine) else value


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _flatten(data, prefix: str = "") -> dict:
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def changed_keys(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two config dicts (added or removed keys included)."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k, object()) != b.get(k, object()))


def dumps_json(obj: Any) -> str:
    """JSON text of a config tree (dataclasses allowed), stable key order for diffs."""
    return json.dumps(config_to_dict(obj), indent=2, sort_keys=True)
