"""Greedy evaluation: run N episodes in parallel envs with the agent acting without exploration.

Host side (owns its envs and a Driver). Seeds come from the caller and must never be used for
training (the config's eval.seed_offset keeps them apart).
"""

from __future__ import annotations

import numpy as np

from agents.agent import Agent
from envs import Driver, make_env
from worldmodel.rng import key_for


def evaluate(
    agent: Agent,
    state,
    *,
    env_id: str,
    episodes: int,
    seed: int,
    plan: bool = True,
    action_repeat: int = 1,
    max_episode_steps: int | None = None,
) -> dict:
    """Run `episodes` episodes (one per parallel env, env i seeded seed + i); greedy actions.

    Returns {'returns': [float] * episodes, 'lengths': [int] * episodes, 'mean', 'std'}.
    """
    env = make_env(
        env_id,
        num_envs=episodes,
        seed=seed,
        action_repeat=action_repeat,
        max_episode_steps=max_episode_steps,
    )
    driver = Driver(env)
    driver.reset(seed=seed)
    carry = agent.init_carry(episodes)
    returns = np.full(episodes, np.nan)
    lengths = np.zeros(episodes, np.int64)
    running = np.zeros(episodes)
    done = np.zeros(episodes, bool)
    decision = 0
    try:
        while not done.all():
            action, carry, _ = agent.act(
                state,
                carry,
                driver.obs,
                driver.first,
                key=key_for(seed, "eval", decision),
                explore=False,
                plan=plan,
            )
            step = driver.step(np.asarray(action))
            running += np.where(done, 0.0, step.reward)
            lengths += ~done
            ended = (step.terminated | step.truncated) & ~done
            returns[ended] = running[ended]
            done |= ended
            decision += 1
    finally:
        env.close()
    return {
        "returns": returns.tolist(),
        "lengths": lengths.tolist(),
        "mean": float(returns.mean()),
        "std": float(returns.std()),
    }
