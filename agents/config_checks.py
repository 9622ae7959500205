"""Range checks of the config values the training loop uses (host): one-line ConfigErrors.

The schema (configs/defaults.yaml) fixes types; this fixes ranges for the sections consumed by
the loop itself (seed, train, eval, log, checkpoint) and the optimiser/loss scalars, so a
negative size is reported as a config mistake instead of failing deep inside numpy or XLA.
Model and planner sizes are checked here too because their factories do not (yet) reject them;
choices (planner.ensemble, abstain.*) and env values are validated by their own components.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from worldmodel.config import Config
from worldmodel.errors import ConfigError

_INT_MIN = {  # dotted key -> smallest allowed value
    "seed": 0,
    "train.steps": 0,
    "train.seed_steps": 0,
    "train.batch_size": 1,
    "train.horizon": 1,
    "train.updates_per_step": 1,
    "train.replay_capacity": 1,
    "eval.every": 0,
    "eval.episodes": 1,
    "eval.seed_offset": 0,
    "log.every": 1,
    "checkpoint.every": 0,
    "checkpoint.keep": 1,
    "model.latent_dim": 1,
    "model.hidden_dim": 1,
    "model.obs_hidden_dim": 1,
    "model.num_layers": 0,
    "model.num_q": 1,
    "model.num_bins": 2,
    "planner.horizon": 1,
    "planner.iterations": 1,
}

_open_unit = (lambda x: 0 < x <= 1, "in (0, 1]")
_unit = (lambda x: 0 <= x <= 1, "in [0, 1]")
_positive = (lambda x: x > 0, "> 0")
_non_negative = (lambda x: x >= 0, ">= 0")
_FLOAT: dict[str, tuple[Callable[[float], bool], str]] = {
    "optim.lr": _positive,
    "optim.enc_lr_scale": _non_negative,
    "optim.grad_clip": _positive,
    "optim.tau": _open_unit,
    "optim.scale_tau": _open_unit,
    "loss.discount": _open_unit,
    "loss.rho": _open_unit,
    "loss.td_lambda": _unit,
    "planner.temperature": _positive,
    "planner.min_std": _non_negative,
}
_ORDERED = (("model.vmin", "model.vmax"), ("model.log_std_min", "model.log_std_max"))
_ORDERED += (("planner.min_std", "planner.max_std"),)


def _get(cfg: Config, dotted: str):
    value = cfg
    for part in dotted.split("."):
        value = value[part]
    return value


def check_training_config(cfg: Config) -> None:
    """Raise ConfigError (one line) naming the first out-of-range value; see module docstring."""
    for key, low in _INT_MIN.items():
        value = _get(cfg, key)
        if value < low:
            raise ConfigError(f"{key} must be >= {low}, got {value}")
    for key, (ok, text) in _FLOAT.items():
        value = float(_get(cfg, key))
        if not (math.isfinite(value) and ok(value)):
            raise ConfigError(f"{key} must be {text}, got {value}")
    for key, value in cfg.loss.items():
        if key.endswith("_coef") and not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"loss.{key} must be >= 0, got {value}")
    for low_key, high_key in _ORDERED:
        low, high = _get(cfg, low_key), _get(cfg, high_key)
        if not low < high:
            raise ConfigError(f"{low_key} ({low}) must be < {high_key} ({high})")
    if cfg.train.replay_capacity < cfg.env.num_envs:
        raise ConfigError(
            f"train.replay_capacity ({cfg.train.replay_capacity}) must be >= env.num_envs "
            f"({cfg.env.num_envs})"
        )
