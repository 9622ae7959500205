"""The training loop (host): collect with the agent, store in replay, update, evaluate, checkpoint.

The library returns numbers through `emit(kind, env_step, data)`; the caller owns the sinks.
kinds: 'train' (metrics every log.every steps; `sps` excludes evaluation and checkpoint time;
`abstain_rate` = abstained decisions / decisions since the last record), 'episode' (each
finished training episode), 'eval', 'checkpoint', 'resume', 'calibration' (threshold, n),
'abstain' (each abstained decision: env, score, threshold; only with abstain.enabled),
'warning' (message: e.g. a corrupt checkpoint skipped on resume).

Resume is exact: every checkpoint is an episode boundary (the envs are reset with a seed keyed
by the step right after each save, as on resume), so a run killed and resumed from its newest
checkpoint reproduces the uninterrupted run bit for bit on CPU. A stop request (`should_stop`,
polled once per iteration) saves a checkpoint at the current step and returns.

Several processes (jax.distributed, see agents.hosts): each has its own envs, replay and
calibration and draws from its own streams; `train.steps` and the counters are per-process env
steps (all processes step in lockstep). The update is data-parallel over all processes' devices
on the global batch `train.batch_size` (each process samples its share); the state stays
replicated, so every process acts with the same params. Only process 0 evaluates; the stop
flag is agreed each iteration; checkpoints hold each process's replay (worldmodel.checkpoint).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from agents.agent import make_agent
from agents.calibration import Calibrator
from agents.config_checks import check_training_config
from agents.divergence import check_finite
from agents.evaluation import evaluate
from agents.hosts import Host
from agents.replay import Replay
from envs import Driver, make_env
from envs.shifts import parse_shift
from worldmodel.checkpoint import Checkpointer
from worldmodel.config import Config
from worldmodel.rng import key_for, np_rng
from worldmodel.sharding import local_replica, make_mesh, make_sharded_update, place_state
from worldmodel.uncertainty import Calibration

Emit = Callable[[str, int, dict], None]


def _crossed(before: int, after: int, every: int) -> bool:
    """True when a multiple of `every` lies in (before, after]."""
    return every > 0 and after // every > before // every


def _choose(agent, state, carry, driver, calibrator, cfg, host, decisions, env_steps, emit):
    """(actions (N, A), carry, number abstained): uniform random in the seed phase, else the agent."""
    seed, n = cfg.seed, cfg.env.num_envs
    if env_steps < cfg.train.seed_steps:
        rng = np_rng(seed, host.stream("seed_action"), decisions)
        return rng.uniform(-1, 1, (n, driver.act_dim)).astype(np.float32), carry, 0
    action, carry, info = agent.act(
        state,
        carry,
        driver.obs,
        driver.first,
        key=key_for(seed, host.stream("act"), decisions),
        explore=calibrator.explore,
        plan=cfg.train.plan,
        calib=calibrator.calib,
    )
    action, info = np.asarray(action), jax.device_get(info)
    where = np.flatnonzero(info["abstained"])
    for i in where:
        record = {"env": int(i), "score": float(info["score"][i])}
        emit("abstain", env_steps, record | {"threshold": float(info["threshold"])})
    return action, carry, len(where)


def _local_params(state):
    """`state` with this process's own copy of the params (for acting; `state` itself with one
    process). Shares buffers with `state`: rebuilt after every update, which donates them."""
    return state if jax.process_count() == 1 else state.replace(params=local_replica(state.params))


def _reset_seed(seed: int, host: Host, env_steps: int) -> int:
    return int(np_rng(seed, host.stream("reset"), env_steps).integers(2**31))


def train(
    cfg: Config, run_dir: Path, *, emit: Emit, should_stop: Callable[[], bool] = lambda: False
) -> dict:
    """Train per `cfg` in `run_dir` (resuming its newest good checkpoint if any).

    Returns the final evaluation ({} when eval.every == 0 or when stopped by `should_stop`).
    Raises TrainingDiverged (nothing saved) on a non-finite loss.
    """
    check_training_config(cfg)
    seed, tc, env_cfg, host = cfg.seed, cfg.train, cfg.env, Host.current()
    local_batch = host.local_batch(tc.batch_size)
    shift = parse_shift(cfg.section("shift"))
    mesh = make_mesh(data=host.mesh_data(cfg.mesh.data), model=cfg.mesh.model)  # 1 x 1: one device
    env = make_env(
        env_cfg.id,
        num_envs=env_cfg.num_envs,
        seed=host.env_seed(seed),
        action_repeat=env_cfg.action_repeat,
        max_episode_steps=env_cfg.max_episode_steps,
        shift=shift,
        backend=env_cfg.backend,
    )
    driver = Driver(env)
    agent = make_agent(
        driver.obs_dim,
        driver.act_dim,
        model=cfg.section("model"),
        loss=cfg.section("loss"),
        optim=cfg.section("optim"),
        planner=cfg.section("planner"),
        abstain=cfg.section("abstain"),
        mesh=mesh,
    )
    calibrator = Calibrator(agent, agent.abstain_cfg, seed=seed, num_envs=env_cfg.num_envs)
    replay = Replay(tc.replay_capacity, driver.obs_dim, driver.act_dim, env_cfg.num_envs)
    ckpt = Checkpointer(run_dir / "checkpoints", keep=cfg.checkpoint.keep)
    state = agent.init(key=key_for(seed, "init", 0))  # the same on every process
    state = place_state(state, mesh, shard_ensemble=cfg.mesh.shard_ensemble)
    env_steps = updates = decisions = 0
    warn = lambda message: emit("warning", env_steps, {"message": message})  # noqa: E731
    found = ckpt.restore_latest(state, warn=warn) if cfg.resume else None
    if found is not None:
        _, state, replay_arrays, meta = found
        replay.load_state_dict(replay_arrays)
        env_steps, updates, decisions = meta["env_steps"], meta["updates"], meta["decisions"]
        calibrator.calib = Calibration.from_json(meta["calibration"])
        calibrator.started = meta.get("holdout_started", 0)
        emit("resume", env_steps, {"updates": updates})
    update = make_sharded_update(agent.update, mesh)
    acting = _local_params(state)  # this process's params (the state itself with one process)
    driver.env_steps = env_steps
    driver.reset(seed=_reset_seed(seed, host, env_steps))
    carry = agent.init_carry(env_cfg.num_envs, like=acting)
    metrics, pretrained, last_eval = None, env_steps >= tc.seed_steps, {}
    abstained, saved = 0, {env_steps} if found is not None else set()

    def run_eval(step: int) -> dict:
        nonlocal last_eval
        ev, e = cfg.eval, env_cfg
        play = lambda plan: evaluate(  # noqa: E731
            agent, acting, env_id=e.id, episodes=ev.episodes, seed=seed + ev.seed_offset,
            plan=plan, action_repeat=e.action_repeat, max_episode_steps=e.max_episode_steps,
            calib=calibrator.calib, shift=shift,
        )  # fmt: skip
        result = {"step": step} | play(ev.plan)
        if ev.plan and ev.prior_too:  # the same seeds acted on by the prior alone
            prior = play(False)
            result["prior"] = {k: prior[k] for k in ("mean", "std", "returns", "lengths")}
        emit("eval", step, result)
        last_eval = result
        return result

    def recalibrate(step: int) -> None:
        rng = np_rng(seed, host.stream("calibrate"), step)
        result = calibrator.recalibrate(acting.params, replay, rng)
        if result is not None:
            emit("calibration", step, result)

    def save(step: int) -> None:
        if step in saved or host.any(step in ckpt.all_steps()):  # agreed: saving is collective
            return
        saved.add(step)
        meta = {"env_steps": step, "updates": updates, "decisions": decisions}
        meta["calibration"] = calibrator.calib.to_json()
        meta["holdout_started"] = calibrator.started
        check_finite(metrics, step, ckpt.latest_step())
        ckpt.save(step, state=state, replay=replay.state_dict(), meta=meta)
        emit("checkpoint", step, meta)

    tick, tick_steps, stopped = time.perf_counter(), env_steps, False
    try:
        while env_steps < tc.steps:
            if stopped := host.any(should_stop()):
                break
            calibrator.start_episodes(driver.first, active=pretrained)
            action, carry, n_abstained = _choose(
                agent, acting, carry, driver, calibrator, cfg, host, decisions, env_steps, emit
            )
            abstained += n_abstained
            step = driver.step(action)
            replay.add(step, holdout=calibrator.held)
            decisions += 1
            before, env_steps = env_steps, driver.env_steps
            for episode in step.episodes:
                emit("episode", env_steps, episode)
            if env_steps >= tc.seed_steps:
                # The first time past seed_steps, catch up on the updates the random phase skipped.
                n = tc.updates_per_step if pretrained else max(tc.seed_steps, 1)
                pretrained = True
                for _ in range(n):
                    rng = np_rng(seed, host.stream("replay"), updates)
                    batch = replay.sample(local_batch, tc.horizon, rng)
                    state, metrics = update(state, batch, key=key_for(seed, "update", updates))
                    updates += 1
                acting = _local_params(state)
            if _crossed(before, env_steps, cfg.log.every) and metrics is not None:
                now = time.perf_counter()
                data = {k: float(v) for k, v in jax.device_get(metrics).items()}
                check_finite(data, env_steps, ckpt.latest_step())
                data.update(updates=updates, sps=(env_steps - tick_steps) / (now - tick))
                data["abstain_rate"] = abstained * env_cfg.action_repeat / (env_steps - tick_steps)
                tick, tick_steps, abstained = now, env_steps, 0
                emit("train", env_steps, data)
            if pretrained and calibrator.due(before, env_steps):
                recalibrate(env_steps)
            if _crossed(before, env_steps, cfg.eval.every) and host.main:
                run_eval(env_steps)
                tick, tick_steps = time.perf_counter(), env_steps
            if _crossed(before, env_steps, cfg.checkpoint.every):
                save(env_steps)
                driver.reset(seed=_reset_seed(seed, host, env_steps))  # as a resume here would
                carry = agent.init_carry(env_cfg.num_envs, like=acting)
                tick, tick_steps = time.perf_counter(), env_steps
    finally:
        env.close()
    if stopped:
        save(env_steps)
        return {}
    if pretrained:
        recalibrate(env_steps)
    save(env_steps)
    if cfg.eval.every > 0 and last_eval.get("step") != env_steps and host.main:
        run_eval(env_steps)
    return last_eval
