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
    calib=None,
    shift=None,
) -> dict:
    """Run `episodes` episodes (one per parallel env, env i seeded seed + i); greedy actions.

    calib: the abstention calibration (None: uncalibrated, never abstains); with
    abstain.enabled the gate and fallback act as deployed, and a 'stop' fallback ends the
    episode there (its return is what it had). shift: an envs.shifts spec or None.
    Returns {'returns': [float] * episodes, 'lengths': [int] * episodes, 'mean', 'std',
    'abstain_rate' (abstained decisions / decisions), 'stopped' (episodes ended by 'stop')}.
    """
    env = make_env(
        env_id,
        num_envs=episodes,
        seed=seed,
        action_repeat=action_repeat,
        max_episode_steps=max_episode_steps,
        **({"shift": shift} if shift is not None else {}),
    )
    driver = Driver(env)
    driver.reset(seed=seed)
    carry = agent.init_carry(episodes, like=state)
    returns = np.full(episodes, np.nan)
    lengths = np.zeros(episodes, np.int64)
    running = np.zeros(episodes)
    done = np.zeros(episodes, bool)
    decision = abstained = decided = 0
    stopped = np.zeros(episodes, bool)
    try:
        while not done.all():
            action, carry, info = agent.act(
                state,
                carry,
                driver.obs,
                driver.first,
                key=key_for(seed, "eval", decision),
                explore=False,
                plan=plan,
                calib=calib,
            )
            flags, stop = np.asarray(info["abstained"]), np.asarray(info["stop"])
            abstained += int((flags & ~done).sum())
            decided += int((~done).sum())
            stop_now = stop & ~done
            if stop_now.any():  # 'stop' fallback: the episode ends here with what it earned
                returns[stop_now] = running[stop_now]
                stopped |= stop_now
                done |= stop_now
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
        "abstain_rate": abstained / max(decided, 1),
        "stopped": int(stopped.sum()),
    }
