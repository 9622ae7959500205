"""Config loader: overlays, overrides, type checks, error messages, save/reload round trip."""

import textwrap
from pathlib import Path

import pytest
import yaml

from worldmodel.config import (
    CONFIGS_DIR,
    Config,
    config_from_file,
    load_config,
    save_config,
)
from worldmodel.errors import ConfigError

DEFAULTS = """\
seed: 0
run_name: null
model:
  latent_dim: 64
  hidden: [256, 256]
  ensemble: 5
train:
  batch_size: 256
  lr: 1e-3          # PyYAML reads this as a string; the loader makes it a float
  total_steps: 1e6  # ... and this an int
  use_amp: false
  clip: 10.0
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def cdir(tmp_path):
    d = tmp_path / "configs"
    _write(d / "defaults.yaml", DEFAULTS)
    _write(
        d / "small.yaml",
        "model: {latent_dim: 16, ensemble: 2}\ntrain: {batch_size: 32}\n",
    )
    _write(d / "tiny.yaml", "model: {latent_dim: 8}\n")
    _write(d / "tasks" / "cheetah.yaml", "train: {total_steps: 3e5}\nrun_name: cheetah\n")
    return d


def _message(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_defaults_and_numbers(cdir):
    cfg = load_config([], configs_dir=cdir)
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.train.total_steps == 1_000_000 and isinstance(cfg.train.total_steps, int)
    assert cfg.model.hidden == (256, 256)
    assert cfg["model"]["latent_dim"] == 64


def test_overlays_apply_in_order_then_overrides(cdir):
    cfg = load_config(["small", "tiny", "cheetah"], configs_dir=cdir)
    assert cfg.model.latent_dim == 8 and cfg.model.ensemble == 2
    assert cfg.train.batch_size == 32 and cfg.train.total_steps == 300_000
    assert cfg.run_name == "cheetah"
    cfg = load_config(["tiny", "small"], configs_dir=cdir)
    assert cfg.model.latent_dim == 16
    # Overrides win over overlays regardless of their position in args.
    cfg = load_config(["model.latent_dim=3", "small"], configs_dir=cdir)
    assert cfg.model.latent_dim == 3 and cfg.train.batch_size == 32


def test_overlay_by_path(cdir, tmp_path):
    path = _write(tmp_path / "elsewhere" / "mine.yaml", "seed: 7\n")
    assert load_config([str(path)], configs_dir=cdir).seed == 7


@pytest.mark.parametrize(
    ("arg", "key", "expected"),
    [
        ("train.lr=1e-3", "lr", 1e-3),
        ("train.lr=3e-4", "lr", 3e-4),
        ("train.lr=1", "lr", 1.0),
        ("train.total_steps=3e5", "total_steps", 300_000),
        ("train.batch_size=128", "batch_size", 128),
        ("train.use_amp=true", "use_amp", True),
        ("train.clip=.5", "clip", 0.5),
    ],
)
def test_override_values(cdir, arg, key, expected):
    value = load_config([arg], configs_dir=cdir).train[key]
    assert value == expected and type(value) is type(expected)


def test_null_default_and_lists(cdir):
    assert load_config(["run_name=abc"], configs_dir=cdir).run_name == "abc"
    assert load_config(["run_name=5"], configs_dir=cdir).run_name == 5
    cfg = load_config(["model.hidden=[32, 32, 32]"], configs_dir=cdir)
    assert cfg.model.hidden == (32, 32, 32)
    with pytest.raises(ConfigError, match="'model.hidden' expects list, got int"):
        load_config(["model.hidden=3"], configs_dir=cdir)


def test_unknown_key_names_key_and_suggestion(cdir):
    with pytest.raises(ConfigError) as excinfo:
        load_config(["model.latnet_dim=3"], configs_dir=cdir)
    assert "unknown config key 'model.latnet_dim' (did you mean 'model.latent_dim'?)" in (
        _message(excinfo)
    )
    with pytest.raises(ConfigError, match="'train.latent_dim' .did you mean 'model.latent_dim'"):
        load_config(["train.latent_dim=3"], configs_dir=cdir)
    _write(cdir / "bad.yaml", "train:\n  batchsize: 3\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(["bad"], configs_dir=cdir)
    message = _message(excinfo)
    assert "'train.batchsize'" in message and "'train.batch_size'" in message
    assert "bad.yaml" in message


@pytest.mark.parametrize(
    ("arg", "expected", "given"),
    [
        ("train.batch_size=abc", "int", "str"),
        ("train.batch_size=1.5", "int", "float"),
        ("train.batch_size=true", "int", "bool"),
        ("train.use_amp=1", "bool", "int"),
        ("train.lr=fast", "float", "str"),
        ("train.lr=false", "float", "bool"),
    ],
)
def test_ill_typed_value_names_key_and_types(cdir, arg, expected, given):
    key = arg.split("=")[0]
    with pytest.raises(ConfigError) as excinfo:
        load_config([arg], configs_dir=cdir)
    assert f"{key!r} expects {expected}, got {given}" in _message(excinfo)


def test_null_and_section_mismatches(cdir):
    with pytest.raises(ConfigError, match="'train.batch_size' cannot be null"):
        load_config(["train.batch_size=null"], configs_dir=cdir)
    with pytest.raises(ConfigError, match="'train' is a section, got int"):
        load_config(["train=3"], configs_dir=cdir)
    with pytest.raises(ConfigError, match="'seed' expects int, got a section"):
        load_config(["seed={a: 1}"], configs_dir=cdir)


@pytest.mark.parametrize("arg", ["=3", " =3", "a..b=3", "train.=3", "1x=2"])
def test_malformed_override(cdir, arg):
    with pytest.raises(ConfigError) as excinfo:
        load_config([arg], configs_dir=cdir)
    assert "override" in _message(excinfo)


def test_unknown_overlay_lists_available(cdir):
    with pytest.raises(ConfigError) as excinfo:
        load_config(["smal"], configs_dir=cdir)
    assert "'smal'" in (message := _message(excinfo))
    assert "cheetah, small, tiny" in message and "defaults" not in message


@pytest.mark.parametrize(
    ("text", "line"),
    [("model:\n  latent_dim: [1, 2\n", 3), ("seed: 1\nseed: 2\n", 2), ("a: b: c\n", 1)],
)
def test_malformed_yaml_names_file_and_line(cdir, text, line):
    (cdir / "broken.yaml").write_text(text)
    with pytest.raises(ConfigError) as excinfo:
        load_config(["broken"], configs_dir=cdir)
    message = _message(excinfo)
    assert "broken.yaml" in message and f"line {line}" in message


def test_missing_defaults(tmp_path):
    with pytest.raises(ConfigError, match="defaults"):
        load_config([], configs_dir=tmp_path)


def test_frozen_and_section_is_a_copy(cdir):
    cfg = load_config(["small"], configs_dir=cdir)
    with pytest.raises(AttributeError):
        cfg.seed = 3
    with pytest.raises(AttributeError, match="latent_dim"):
        _ = cfg.model.latent_dmi
    section = cfg.section("model")
    assert section == {"latent_dim": 16, "hidden": [256, 256], "ensemble": 2}
    section["latent_dim"] = 999
    section["hidden"].append(1)
    assert cfg.model.latent_dim == 16 and cfg.model.hidden == (256, 256)
    plain = cfg.to_dict()
    plain["train"]["batch_size"] = 1
    assert cfg.train.batch_size == 32
    with pytest.raises(KeyError):
        cfg.section("seed")


def test_replace_validates(cdir):
    cfg = load_config([], configs_dir=cdir)
    new = cfg.replace(**{"train.batch_size": 8, "seed": 3})
    assert (new.train.batch_size, new.seed, cfg.train.batch_size) == (8, 3, 256)
    with pytest.raises(ConfigError, match="did you mean 'train.batch_size'"):
        cfg.replace(**{"train.batch_sizes": 8})


def test_save_and_reload_round_trip(cdir, tmp_path):
    cfg = load_config(["small", "cheetah", "train.lr=3e-4"], configs_dir=cdir)
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, path)
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temp left
    again = config_from_file(path, configs_dir=cdir)
    assert isinstance(again, Config)
    assert again == cfg and again.to_dict() == cfg.to_dict()
    _write(path, "model: {latnet_dim: 3}\n")
    with pytest.raises(ConfigError, match="did you mean 'model.latent_dim'"):
        config_from_file(path, configs_dir=cdir)


def test_real_configs_load(tmp_path):
    """Defaults and every overlay shipped in configs/ load cleanly and save/reload equal."""
    if not (CONFIGS_DIR / "defaults.yaml").is_file():
        pytest.skip("configs/defaults.yaml not written yet")
    paths = [p for p in CONFIGS_DIR.glob("*.yaml") if p.name != "defaults.yaml"]
    paths += sorted((CONFIGS_DIR / "tasks").glob("*.yaml"))
    base = load_config([])
    for path in [None, *paths]:
        cfg = load_config([str(path)] if path else [])
        assert set(cfg) == set(base), path
        save_config(cfg, tmp_path / "config.yaml")
        assert config_from_file(tmp_path / "config.yaml") == cfg, path


def test_runs_saved_before_a_key_existed_reload_as_they_were_built(tmp_path):
    """A run saved before model.termination_from existed was built with the (z, a) head: its
    config reloads so even where the default is another value (here a configs folder whose
    default is 'next', so the reload cannot pass by the default alone), while a saved one that
    names the key keeps its value."""
    cdir = tmp_path / "configs"
    cdir.mkdir()
    text = (CONFIGS_DIR / "defaults.yaml").read_text()
    assert "termination_from: action" in text
    (cdir / "defaults.yaml").write_text(
        text.replace("termination_from: action", "termination_from: next")
    )
    cfg = load_config([], configs_dir=cdir)
    assert cfg.model.termination_from == "next"
    data = cfg.to_dict()
    del data["model"]["termination_from"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert config_from_file(path, configs_dir=cdir).model.termination_from == "action"
    save_config(cfg, path)
    assert config_from_file(path, configs_dir=cdir).model.termination_from == "next"
