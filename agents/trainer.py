"""The training loop (host): collect with the agent, store in replay, update, evaluate, checkpoint.

The library returns numbers through `emit(kind, env_step, data)`; the caller owns the sinks.
kinds: 'train' (metrics every log.every steps; `sps` excludes evaluation and checkpoint time),
'episode' (each finished training episode), 'eval', 'checkpoint', 'resume'.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from agents.agent import make_agent
from agents.evaluation import evaluate
from agents.replay import Replay
from envs import Driver, make_env
from worldmodel.checkpoint import Checkpointer
from worldmodel.config import Config
from worldmodel.rng import key_for, np_rng

Emit = Callable[[str, int, dict], None]


def _crossed(before: int, after: int, every: int) -> bool:
    """True when a multiple of `every` lies in (before, after]."""
    return every > 0 and after // every > before // every


def train(cfg: Config, run_dir: Path, *, emit: Emit) -> dict:
    """Train per `cfg` in `run_dir` (resuming its newest checkpoint if any).

    Returns the final evaluation ({} when eval.every == 0: no evaluation at all).
    """
    seed, tc, env_cfg = cfg.seed, cfg.train, cfg.env
    env = make_env(
        env_cfg.id,
        num_envs=env_cfg.num_envs,
        seed=seed,
        action_repeat=env_cfg.action_repeat,
        max_episode_steps=env_cfg.max_episode_steps,
    )
    driver = Driver(env)
    agent = make_agent(
        driver.obs_dim,
        driver.act_dim,
        model=cfg.section("model"),
        loss=cfg.section("loss"),
        optim=cfg.section("optim"),
        planner=cfg.section("planner"),
    )
    replay = Replay(tc.replay_capacity, driver.obs_dim, driver.act_dim, env_cfg.num_envs)
    ckpt = Checkpointer(run_dir / "checkpoints", keep=cfg.checkpoint.keep)
    state = agent.init(key=key_for(seed, "init", 0))
    env_steps = updates = decisions = 0
    if cfg.resume and ckpt.latest_step() is not None:
        state, replay_arrays, meta = ckpt.restore(state)
        replay.load_state_dict(replay_arrays)
        env_steps, updates, decisions = meta["env_steps"], meta["updates"], meta["decisions"]
        emit("resume", env_steps, {"updates": updates})
    driver.env_steps = env_steps
    driver.reset(seed=int(np_rng(seed, "reset", env_steps).integers(2**31)))
    carry = agent.init_carry(env_cfg.num_envs)
    metrics, pretrained, last_eval = None, env_steps >= tc.seed_steps, {}

    def run_eval(step: int) -> dict:
        nonlocal last_eval
        result = {"step": step} | evaluate(
            agent,
            state,
            env_id=env_cfg.id,
            episodes=cfg.eval.episodes,
            seed=seed + cfg.eval.seed_offset,
            plan=cfg.eval.plan,
            action_repeat=env_cfg.action_repeat,
            max_episode_steps=env_cfg.max_episode_steps,
        )
        emit("eval", step, result)
        last_eval = result
        return result

    def save(step: int) -> None:
        if step in ckpt.all_steps():
            return
        meta = {"env_steps": step, "updates": updates, "decisions": decisions}
        ckpt.save(step, state=state, replay=replay.state_dict(), meta=meta)
        emit("checkpoint", step, meta)

    tick, tick_steps = time.perf_counter(), env_steps
    try:
        while env_steps < tc.steps:
            if env_steps < tc.seed_steps:
                action = (
                    np_rng(seed, "seed_action", decisions)
                    .uniform(-1, 1, (env_cfg.num_envs, driver.act_dim))
                    .astype(np.float32)
                )
            else:
                action, carry, _ = agent.act(
                    state,
                    carry,
                    driver.obs,
                    driver.first,
                    key=key_for(seed, "act", decisions),
                    explore=True,
                    plan=tc.plan,
                )
                action = np.asarray(action)
            step = driver.step(action)
            replay.add(step)
            decisions += 1
            before, env_steps = env_steps, driver.env_steps
            for episode in step.episodes:
                emit("episode", env_steps, episode)
            if env_steps >= tc.seed_steps:
                # The first time past seed_steps, catch up on the updates the random phase skipped.
                n = tc.updates_per_step if pretrained else max(tc.seed_steps, 1)
                pretrained = True
                for _ in range(n):
                    batch = replay.sample(
                        tc.batch_size, tc.horizon, np_rng(seed, "replay", updates)
                    )
                    state, metrics = agent.update(
                        state, batch, key=key_for(seed, "update", updates)
                    )
                    updates += 1
            if _crossed(before, env_steps, cfg.log.every) and metrics is not None:
                now = time.perf_counter()
                data = {k: float(v) for k, v in jax.device_get(metrics).items()}
                data.update(updates=updates, sps=(env_steps - tick_steps) / (now - tick))
                tick, tick_steps = now, env_steps
                emit("train", env_steps, data)
            if _crossed(before, env_steps, cfg.eval.every):
                run_eval(env_steps)
                tick, tick_steps = time.perf_counter(), env_steps
            if _crossed(before, env_steps, cfg.checkpoint.every):
                save(env_steps)
                tick, tick_steps = time.perf_counter(), env_steps
    finally:
        env.close()
    save(env_steps)
    if cfg.eval.every > 0 and last_eval.get("step") != env_steps:
        run_eval(env_steps)
    return last_eval
