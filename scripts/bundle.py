"""Load a trained agent from a run folder or an exported bundle; export a bundle (host only).

An exported bundle is a folder with `params.npz` (the params pytree, one array per leaf named by
its '/'-joined path; no pickle), the resolved `config.yaml`, `meta.json`, `obs_sample.npz` (up to
N replay observations, for the decoder probe) and `calibration.json` when the run has one (its own
calibration.json, else the abstention calibration stored in the checkpoint's meta).
It is enough to evaluate and visualize with no training code: no replay, no optimizer state.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax
import jax
import numpy as np

from worldmodel.errors import CheckpointError, UserError

FORMAT = "worldmodel-bundle/1"
CALIBRATION = "calibration.json"


@flax.struct.dataclass
class PolicyState:
    """The part of a TrainState that acting needs: `Agent.act(state, ...)` reads `state.params`."""

    params: dict


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A loaded agent. `state` is a TrainState (run folder) or a PolicyState (exported bundle);
    `obs_sample` (M, D) float32 are replay observations or None; `calibration` the parsed
    calibration JSON (key 'threshold', see `calibration_of`) or None; `step` the checkpoint's env step; `source` 'run' or 'bundle'."""

    agent: Any
    state: Any
    cfg: Any
    calibration: dict | None
    step: int
    obs_sample: np.ndarray | None
    source: str


def agent_for_config(cfg):
    """The Agent (static functions, no state) of a resolved config."""
    from agents.agent import make_agent
    from envs import env_spec

    spec = env_spec(cfg.env.id)
    sections = {k: cfg.section(k) for k in ("model", "loss", "optim", "planner")}
    if "abstain" in cfg:  # the abstention gate's slice, where this version has one
        sections["abstain"] = cfg.section("abstain")
    return make_agent(spec["obs_dim"], spec["act_dim"], **sections)


def _read_calibration(folder: Path, meta: dict | None = None) -> dict | None:
    """folder/calibration.json, else the checkpoint meta's 'calibration' (the JSON form of
    worldmodel.uncertainty.Calibration: 'threshold' (null = uncalibrated), 'epi_scale', ...)."""
    path = folder / CALIBRATION
    if not path.is_file():
        found = (meta or {}).get("calibration")
        return found if isinstance(found, dict) else None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}") from err
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object")
    return data


def calibration_of(bundle: Bundle):
    """The bundle's calibration as a worldmodel.uncertainty.Calibration for `Agent.act` /
    `evaluate(calib=...)`, or None (uncalibrated: nothing abstains) when it has none or its JSON
    lacks the normalisers (a file holding only a threshold)."""
    data = bundle.calibration
    if not data or not {"epi_scale", "res_scale", "threshold", "n", "alpha"} <= data.keys():
        return None
    from worldmodel.uncertainty import Calibration

    return Calibration.from_json(data)


def evaluate_bundle(bundle: Bundle, *, episodes: int, seed: int, plan: bool = True) -> dict:
    """`agents.evaluation.evaluate` of the bundle's agent on its task, as training's evaluations
    run: the run's env settings and its abstention calibration (if any). Returns its dict."""
    from agents.evaluation import evaluate

    cfg = bundle.cfg
    calib = calibration_of(bundle)
    return evaluate(
        bundle.agent,
        bundle.state,
        env_id=cfg.env.id,
        episodes=episodes,
        seed=seed,
        plan=plan,
        action_repeat=cfg.env.action_repeat,
        max_episode_steps=cfg.env.max_episode_steps,
        **({} if calib is None else {"calib": calib}),
    )


def replay_observations(replay: dict, *, limit: int, seed: int = 0) -> np.ndarray | None:
    """Stored observations (M <= limit, D) of a replay state dict, uniformly subsampled;
    None when it holds none."""
    if "obs" not in replay or "size" not in replay:
        return None
    obs = np.asarray(replay["obs"])[:, : int(replay["size"])]
    obs = obs.reshape(-1, obs.shape[-1])
    if len(obs) > limit:
        obs = obs[np.sort(np.random.default_rng(seed).choice(len(obs), limit, replace=False))]
    return obs.astype(np.float32) if len(obs) else None


def load_run(run_dir: Path, *, step: int | None = None):
    """(agent, TrainState, cfg, meta, replay dict) of checkpoint `step` (default newest) of a run
    folder made by scripts.train. Raises UserError (one line) when it is not one."""
    from worldmodel.checkpoint import Checkpointer
    from worldmodel.config import config_from_file
    from worldmodel.rng import key_for

    config_path = Path(run_dir) / "config.yaml"
    if not config_path.is_file():
        raise UserError(f"{config_path} not found: pass a run folder made by scripts.train")
    cfg = config_from_file(config_path)
    agent = agent_for_config(cfg)
    with Checkpointer(Path(run_dir) / "checkpoints") as ckpt:
        template = agent.init(key=key_for(cfg.seed, "init", 0))
        state, replay, meta = ckpt.restore(template, step)
    return agent, state, cfg, meta, replay


def _flatten(params: dict, prefix: str = "") -> dict[str, Any]:
    """{'encoder/Dense_0/kernel': leaf, ...} of a nested params dict."""
    out = {}
    for key, value in params.items():
        if "/" in str(key):
            raise ValueError(f"param name {key!r} contains '/'")
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "/"))
        else:
            out[name] = value
    return out


def _unflatten(arrays: dict[str, np.ndarray], template: dict, where: Path) -> dict:
    """Nested dict shaped like `template` (leaves with .shape/.dtype) from '/'-joined arrays;
    names, shapes and dtypes must match exactly (CheckpointError naming the first mismatch)."""
    flat = _flatten(template)
    missing, extra = sorted(flat.keys() - arrays.keys()), sorted(arrays.keys() - flat.keys())
    if missing or extra:
        what = f"lacks {missing[0]}" if missing else f"has unexpected {extra[0]}"
        raise CheckpointError(f"{where} {what}: it does not match the model in config.yaml")
    nested: dict = {}
    for name, leaf in flat.items():
        got = arrays[name]
        if got.shape != tuple(leaf.shape) or got.dtype != leaf.dtype:
            raise CheckpointError(
                f"{where}: {name} is {got.dtype}{list(got.shape)}, the model in config.yaml "
                f"needs {leaf.dtype}{list(leaf.shape)}"
            )
        node = nested
        *parents, last = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = got
    return nested


def _load_exported(path: Path) -> Bundle:
    from worldmodel.config import config_from_file

    for name in ("config.yaml", "meta.json"):
        if not (path / name).is_file():
            raise UserError(f"{path / name} not found: {path} is not a complete exported bundle")
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {path / 'meta.json'}: {err}") from err
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}/meta.json: unknown bundle format {meta.get('format')!r}")
    cfg = config_from_file(path / "config.yaml")
    agent = agent_for_config(cfg)
    template = jax.eval_shape(lambda: agent.model.init(key=jax.random.key(0)))
    try:
        with np.load(path / "params.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path / 'params.npz'}: {err}") from err
    params = jax.tree.map(jax.numpy.asarray, _unflatten(arrays, template, path / "params.npz"))
    obs_sample = None
    if (path / "obs_sample.npz").is_file():
        with np.load(path / "obs_sample.npz", allow_pickle=False) as npz:
            obs_sample = npz["obs"]
    return Bundle(
        agent=agent,
        state=PolicyState(params=params),
        cfg=cfg,
        calibration=_read_calibration(path),
        step=int(meta["checkpoint_step"]),
        obs_sample=obs_sample,
        source="bundle",
    )


# Config sections that may change after training: they shape acting, not the trained parameters.
ACTING_SECTIONS = ("planner", "abstain")


def with_overrides(bundle: Bundle, overrides) -> Bundle:
    """`bundle` acting under dotted overrides of the ACTING_SECTIONS (`planner.value=min`): the
    same parameters, a rebuilt agent. Any other key is a one-line ConfigError."""
    if not overrides:
        return bundle
    from worldmodel.config import apply_overrides

    cfg = apply_overrides(bundle.cfg, list(overrides), sections=ACTING_SECTIONS)
    return dataclasses.replace(bundle, cfg=cfg, agent=agent_for_config(cfg))


def load_bundle(
    path: Path, *, step: int | None = None, obs_limit: int = 20000, overrides=()
) -> Bundle:
    """Load an exported bundle (folder with params.npz) or a run folder (checkpoint `step`,
    default newest; up to `obs_limit` replay observations are kept as `obs_sample`), acting
    under `overrides` (dotted `planner.*` / `abstain.*` keys, see `with_overrides`)."""
    path = Path(path)
    if (path / "params.npz").is_file():
        if step is not None:
            raise UserError(f"{path} is an exported bundle: it has one step, drop --step")
        return with_overrides(_load_exported(path), overrides)
    agent, state, cfg, meta, replay = load_run(path, step=step)
    bundle = Bundle(
        agent=agent,
        state=state,
        cfg=cfg,
        calibration=_read_calibration(path, meta),
        step=int(meta["env_steps"]),
        obs_sample=replay_observations(replay, limit=obs_limit, seed=cfg.seed),
        source="run",
    )
    return with_overrides(bundle, overrides)


def export_bundle(
    run_dir: Path, out_dir: Path, *, step: int | None = None, obs_limit: int = 20000
) -> Path:
    """Write the bundle of run folder `run_dir` (checkpoint `step`, default newest) to
    `out_dir` (created; must not hold a bundle already). Returns `out_dir`."""
    from worldmodel.config import save_config

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if (out_dir / "params.npz").exists():
        raise UserError(f"{out_dir} already holds a bundle; choose another folder")
    agent, state, cfg, meta, replay = load_run(run_dir, step=step)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "params.npz", **_flatten(jax.device_get(state.params)))
    save_config(cfg, out_dir / "config.yaml")
    obs = replay_observations(replay, limit=obs_limit, seed=cfg.seed)
    if obs is not None and obs_limit > 0:
        np.savez(out_dir / "obs_sample.npz", obs=obs)
    calibration = _read_calibration(run_dir, meta)
    if calibration is not None:
        (out_dir / CALIBRATION).write_text(json.dumps(calibration, indent=2))
    info = {
        "format": FORMAT,
        "env_id": cfg.env.id,
        "checkpoint_step": int(meta["env_steps"]),
        "source_run": str(run_dir.resolve()),
    }
    (out_dir / "meta.json").write_text(json.dumps(info, indent=2))
    return out_dir
