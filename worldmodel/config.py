"""Config loading (host only): documented YAML defaults, ordered overlays, dotted overrides.

Every key lives in `configs/defaults.yaml`; overlays and overrides may only set existing keys,
with values of the default's type. The result is a frozen `Config`; components get slices.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Hashable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from worldmodel.errors import ConfigError
from worldmodel.files import atomic_write

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULTS_NAME = "defaults.yaml"

_KEY_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
# PyYAML (YAML 1.1) reads `1e-3` and `3e5` as strings, so such strings are parsed as numbers.
_SCI_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_SCALARS = (bool, int, float, str)


def _sci_number(value: Any) -> int | float | None:
    """`'1e-3'` -> 0.001, `'3e5'` -> 300000 (int: no '.' and integral), anything else -> None."""
    if not isinstance(value, str) or not _SCI_RE.match(value.strip()):
        return None
    number = float(value)
    mantissa = value.strip().lower().split("e")[0]
    return int(number) if "." not in mantissa and number.is_integer() else number


def _numbers_in(tree: dict) -> dict:
    """Copy of `tree` with scientific-notation strings (see `_sci_number`) turned into numbers."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out[key] = _numbers_in(value)
        else:
            number = _sci_number(value)
            out[key] = value if number is None else number
    return out


def _fail(message: str) -> ConfigError:
    """A ConfigError whose message is guaranteed to be one line."""
    return ConfigError(" ".join(message.split()))


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of silently keeping the last."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    result = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable) or key in result:
            hashable = isinstance(key, Hashable)
            problem = f"duplicate key {key!r}" if hashable else "unhashable key"
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, problem, mark)
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> dict:
    """Read a YAML mapping from `path`; an empty file is `{}`. Errors name the file and line."""
    try:
        text = path.read_text()
    except OSError as e:
        raise _fail(f"cannot read config file {str(path)!r}: {e.strerror or e}") from e
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise _fail(f"malformed YAML in {str(path)!r}{where}: {problem}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _fail(f"config file {str(path)!r} must be a mapping, not {_type_name(data)}")
    return data


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict | Config):
        return "section"
    return type(value).__name__


def _dotted_keys(tree: Mapping, prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        keys.append(prefix + key)
        if isinstance(value, Mapping):
            keys.extend(_dotted_keys(value, prefix + key + "."))
    return keys


def _coerce(key: str, default: Any, value: Any, source: str) -> Any:
    """Return `value` checked against (and, for numbers, converted to) `default`'s type.

    int is accepted for float, bool never for int/float, `1e-3`-style strings for numbers;
    a null default accepts any scalar or null; a non-null default rejects null.
    """
    given = _type_name(value)
    if default is None:
        number = _sci_number(value)
        value = value if number is None else number
        if value is None or isinstance(value, _SCALARS):
            return value
        raise _fail(f"config key {key!r} expects a scalar or null, got {given} ({source})")
    expected = _type_name(default)
    if value is None:
        raise _fail(f"config key {key!r} cannot be null (expected {expected}) ({source})")
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int | float):
        if _sci_number(value) is not None:
            number = float(value)
            value = int(number) if isinstance(default, int) and number.is_integer() else number
        if isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = type(value) is type(default)
    if not ok:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise _fail(f"config key {key!r} expects {expected}, got {given} {shown} ({source})")
    return value


def _merge(
    base: dict,
    overlay: Mapping,
    *,
    schema: dict,
    source: str,
    prefix: str = "",
    root: dict | None = None,
) -> dict:
    """Return a copy of `base` with `overlay` merged in, each key validated against `schema`.

    `schema` is the defaults tree at this level (keys and types); `source` names the file or
    override for error messages; `root` is the whole defaults tree, for suggestions.
    """
    root = schema if root is None else root
    merged = dict(base)
    for key, value in overlay.items():
        if not isinstance(key, str):
            raise _fail(f"config keys must be strings, got {key!r} under {prefix!r} ({source})")
        dotted = prefix + key
        if key not in schema:
            raise _fail(f"{_unknown_key(dotted, root)} ({source})")
        default = schema[key]
        if isinstance(default, dict):
            if not isinstance(value, Mapping):
                raise _fail(
                    f"config key {dotted!r} is a section, got {_type_name(value)} ({source})"
                )
            merged[key] = _merge(
                base[key],
                value,
                schema=default,
                source=source,
                prefix=dotted + ".",
                root=root,
            )
        elif isinstance(value, Mapping):
            expected = "a scalar" if default is None else _type_name(default)
            raise _fail(f"config key {dotted!r} expects {expected}, got a section ({source})")
        else:
            merged[key] = _coerce(dotted, default, value, source)
    return merged


def _unknown_key(dotted: str, root: dict) -> str:
    candidates = _dotted_keys(root)
    close = difflib.get_close_matches(dotted, candidates, n=1, cutoff=0.6)
    if not close:  # the right name in the wrong section: `train.latent_dim`
        leaf = dotted.rsplit(".", 1)[-1]
        close = [c for c in candidates if c.rsplit(".", 1)[-1] == leaf][:1]
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown config key {dotted!r}{hint}"


def _parse_override(arg: str) -> dict:
    """`a.b=value` -> {'a': {'b': value}}, value parsed as YAML."""
    key, _, text = arg.partition("=")
    key = key.strip()
    if not key:
        raise _fail(f"override {arg!r} has no key (expected key.path=value)")
    if not _KEY_RE.match(key):
        raise _fail(f"override {arg!r} has a malformed key {key!r} (expected key.path=value)")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or "not valid YAML"
        raise _fail(f"override {arg!r} has a malformed value: {problem}") from e
    return _nest(key, value)


def _nest(dotted: str, value: Any) -> dict:
    """`('a.b', 3)` -> `{'a': {'b': 3}}`."""
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return Config(value)
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


class Config(Mapping):
    """Frozen, validated config tree. `cfg.train.batch_size` or `cfg['train']['batch_size']`.

    Sections are `Config`s, lists are tuples; `to_dict()` and `section()` give plain copies.
    """

    __slots__ = ("_data", "_schema")

    def __init__(self, data: Mapping, *, _schema: dict | None = None):
        object.__setattr__(self, "_data", {k: _freeze(v) for k, v in data.items()})
        object.__setattr__(self, "_schema", _schema)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        data = object.__getattribute__(self, "_data")
        if name in data:
            return data[name]
        close = difflib.get_close_matches(name, list(data), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise AttributeError(f"config has no key {name!r}{hint}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Config is frozen; use cfg.replace(**{'a.b': value})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Config is frozen")

    def __reduce__(self):
        return (_rebuild, (self.to_dict(), self._schema))

    def __repr__(self) -> str:
        return f"Config({self.to_dict()!r})"

    def to_dict(self) -> dict:
        """Deep plain copy: nested dicts and lists, safe to mutate."""
        return {k: _thaw(v) for k, v in self._data.items()}

    def section(self, name: str) -> dict:
        """Plain dict copy of one top-level section, so a component gets only its slice."""
        if name not in self._data or not isinstance(self._data[name], Config):
            sections = [k for k, v in self._data.items() if isinstance(v, Config)]
            raise KeyError(f"config has no section {name!r} (sections: {', '.join(sections)})")
        return self._data[name].to_dict()

    def replace(self, **dotted: Any) -> Config:
        """Return a new Config with dotted keys set, e.g. `cfg.replace(**{'train.seed': 1})`.

        Only for a Config built by `load_config`/`config_from_file` (it knows the schema).
        """
        if self._schema is None:
            raise TypeError("replace() needs a root Config from load_config or config_from_file")
        data = self.to_dict()
        for key, value in dotted.items():
            if not _KEY_RE.match(key):
                raise _fail(f"malformed config key {key!r} in replace()")
            data = _merge(data, _nest(key, value), schema=self._schema, source="replace()")
        return Config(data, _schema=self._schema)


def _rebuild(data: dict, schema: dict | None) -> Config:
    return Config(data, _schema=schema)


def _available_overlays(configs_dir: Path) -> list[str]:
    names = {p.stem for p in configs_dir.glob("*.yaml") if p.name != DEFAULTS_NAME}
    names |= {p.stem for p in (configs_dir / "tasks").glob("*.yaml")}
    return sorted(names)


def _resolve_overlay(name: str, configs_dir: Path) -> Path:
    for candidate in (
        configs_dir / f"{name}.yaml",
        configs_dir / "tasks" / f"{name}.yaml",
        Path(name),
    ):
        if candidate.is_file():
            return candidate
    available = ", ".join(_available_overlays(configs_dir)) or "none"
    raise _fail(f"unknown config overlay {name!r} (available: {available})")


def _load_defaults(configs_dir: Path) -> dict:
    path = Path(configs_dir) / DEFAULTS_NAME
    if not path.is_file():
        raise _fail(f"defaults file {str(path)!r} not found")
    return _numbers_in(_read_yaml(path))


def load_config(
    args: Sequence[str] = (), *, configs_dir: str | os.PathLike = CONFIGS_DIR
) -> Config:
    """Resolve a Config: defaults, then overlays in the order given, then dotted overrides.

    Args:
        args: command-line style strings; `a.b=value` is an override (value parsed as YAML,
            applied after all overlays), anything else an overlay name looked up as
            `<configs_dir>/<name>.yaml`, `<configs_dir>/tasks/<name>.yaml`, then as a path.
        configs_dir: folder holding `defaults.yaml` (default: the repo's `configs/`).
    Raises:
        ConfigError (one line) for unknown keys/overlays, ill-typed values, malformed YAML.
    """
    configs_dir = Path(configs_dir)
    if isinstance(args, str):
        raise TypeError("load_config expects a sequence of strings, not one string")
    defaults = _load_defaults(configs_dir)
    data = defaults
    overlays = [a for a in args if "=" not in a]
    overrides = [a for a in args if "=" in a]
    for name in overlays:
        path = _resolve_overlay(name, configs_dir)
        data = _merge(data, _read_yaml(path), schema=defaults, source=str(path))
    return apply_overrides(Config(data, _schema=defaults), overrides)


def apply_overrides(cfg: Config, args: Sequence[str], *, sections: Sequence[str] = ()) -> Config:
    """`cfg` with dotted overrides (`planner.horizon=5`, value parsed as YAML) applied; when
    `sections` is given, a key outside them is an error (e.g. evaluation may change the planner
    but not the model whose parameters were trained)."""
    if cfg._schema is None:
        raise TypeError(
            "apply_overrides() needs a root Config from load_config or config_from_file"
        )
    data = cfg.to_dict()
    for arg in args:
        if sections and arg.partition("=")[0].strip().split(".")[0] not in sections:
            raise _fail(
                f"override {arg!r} cannot be changed here: only {', '.join(sections)} keys can"
            )
        data = _merge(data, _parse_override(arg), schema=cfg._schema, source=f"override {arg!r}")
    return Config(data, _schema=cfg._schema)


def config_from_file(
    path: str | os.PathLike, *, configs_dir: str | os.PathLike = CONFIGS_DIR
) -> Config:
    """Reload a config saved by `save_config`, validated against the current defaults.

    A key the saved file lacks takes its default, except where the default changed what a run
    builds since the key was added: those keys (`SAVED_BEFORE`) take the value every run made
    before them had, so an older run's checkpoint still loads and acts as it was trained.
    """
    defaults = _load_defaults(Path(configs_dir))
    saved = _read_yaml(Path(path))
    for dotted, value in SAVED_BEFORE.items():
        section, key = dotted.split(".")
        known = key in (defaults.get(section) or {})
        if known and isinstance(saved.get(section), dict) and key not in saved[section]:
            saved[section][key] = value
    data = _merge(defaults, saved, schema=defaults, source=str(path))
    return Config(data, _schema=defaults)


# key -> the value runs saved before the key existed were built with
SAVED_BEFORE = {"model.termination_from": "action"}


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML atomically (`files.atomic_write`)."""
    text = "# Resolved config (worldmodel.config.save_config).\n"
    text += yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)
    atomic_write(path, lambda f: f.write(text))
