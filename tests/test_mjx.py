"""The MJX backend: agrees with Gymnasium's MuJoCo on a short rollout, drives the Driver the same
way (episodes, truncation, raw step counts), and fails in one line where it cannot run."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import Driver, make_env, make_single_env
from envs.mjx_env import MjxTask, WorldState, make_batched
from worldmodel.errors import ConfigError, EnvError

N, REPEAT, LIMIT = 4, 2, 21  # 21 raw steps: the 11th decision is cut after 1 of its 2 repeats
# Tolerance: MJX runs in float32 (eps 1.2e-7), MuJoCo in float64, and MJX's contact solver stops
# short of float64 convergence. Over one decision (10 MuJoCo steps for HalfCheetah) from the same
# state, joint velocities near a foot contact differ by up to 5e-3 at |v| ~ 4 (1.3e-3 relative),
# positions and rewards by < 1e-4 (measured here; InvertedPendulum, without contacts, by 1e-6).
# 5e-3 (abs + rel) covers that 2x over, and the reward's 1e-3 is 30x over; a wrong observation
# layout, reset, dt, ctrl weight or action rescaling moves them by 1e-2 to 1 and fails.
ATOL = RTOL = 5e-3
REWARD_ATOL = 1e-3


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo writes MUJOCO_LOG.TXT (HalfCheetah warns) to the cwd


@pytest.fixture(scope="module", params=["HalfCheetah-v5", "InvertedPendulum-v5"])
def mjx_env(request):
    """One compiled MJX env per task, shared by the tests below (compiling MJX takes ~10 s)."""
    pytest.importorskip("mujoco.mjx", reason='needs mujoco-mjx: pip install -e ".[mjx]"')
    env = make_env(
        request.param,
        num_envs=N,
        seed=0,
        action_repeat=REPEAT,
        max_episode_steps=LIMIT,
        backend="mjx",
    )
    yield env
    env.close()


def _sync_refs(env, refs, worlds) -> None:
    """Put MJX world i's state (float32, exact in float64) into Gymnasium env i, for i in worlds."""
    qpos, qvel = (np.asarray(x, np.float64) for x in (env.state.data.qpos, env.state.data.qvel))
    for i in worlds:
        refs[i].unwrapped.set_state(qpos[i], qvel[i])


def _force_mjx(env, refs) -> None:
    """Restart every MJX world from its Gymnasium env's current (float64) physics state."""
    qpos = np.stack([ref.unwrapped.data.qpos for ref in refs]).astype(np.float32)
    qvel = np.stack([ref.unwrapped.data.qvel for ref in refs]).astype(np.float32)
    warm = np.stack([ref.unwrapped.data.qacc_warmstart for ref in refs]).astype(np.float32)
    data = env.state.data.replace(
        qpos=jnp.asarray(qpos), qvel=jnp.asarray(qvel), qacc_warmstart=jnp.asarray(warm)
    )
    env.state = env.state.replace(data=data)


def test_mjx_agrees_with_mujoco_on_a_short_rollout(mjx_env):
    """Same start states (MJX's resets copied into Gymnasium's envs, also after each autoreset),
    same 30 random decisions (60 raw steps, so episodes end and restart): obs, rewards,
    terminations, truncations and raw step counts agree. Decisions 0-4 run free; contacts then
    amplify float32 rounding chaotically (a 1e-6 change of qvel in MuJoCo itself grows to 1e-3
    within 30 steps), so later decisions restart MJX from MuJoCo's state: one-step agreement."""
    env_id = mjx_env.spec.id
    mjx_env.reset(seed=1)
    refs = [
        make_single_env(env_id, action_repeat=REPEAT, max_episode_steps=LIMIT) for _ in range(N)
    ]
    for i, ref in enumerate(refs):
        ref.reset(seed=i)  # starts the TimeLimit count; the state comes from MJX
    _sync_refs(mjx_env, refs, range(N))
    rng = np.random.default_rng(0)
    ends, used = 0, [0.0, 0.0]  # the largest fraction of the tolerance used: free, forced
    for t in range(30):
        if t >= 5:
            _force_mjx(mjx_env, refs)
        action = rng.uniform(-1, 1, (N, mjx_env.single_action_space.shape[0])).astype(np.float32)
        obs, reward, terminated, truncated, info = mjx_env.step(action)
        for i, ref in enumerate(refs):
            r_obs, r_rew, r_term, r_trunc, r_info = ref.step(action[i])
            done = terminated[i] or truncated[i]
            got = info["final_obs"][i] if done else obs[i]
            np.testing.assert_allclose(got, r_obs, atol=ATOL, rtol=RTOL)
            np.testing.assert_allclose(reward[i], r_rew, atol=REWARD_ATOL, rtol=0)
            assert (terminated[i], truncated[i]) == (r_term, r_trunc)
            assert info["env_steps"][i] == r_info["env_steps"]
            frac = np.max(np.abs(got - r_obs) / (ATOL + RTOL * np.abs(r_obs)))
            used[t >= 5] = max(used[t >= 5], float(frac))
            if done:  # both autoreset: restart Gymnasium's env from MJX's reset state
                ends += 1
                ref.reset()
                _sync_refs(mjx_env, refs, [i])
                np.testing.assert_array_equal(ref.unwrapped._get_obs().astype(np.float32), obs[i])
    assert ends >= N  # every world crossed at least one episode boundary
    print(f"{env_id}: tolerance used free {used[0]:.2f}, forced {used[1]:.2f}; {ends} ends")
    for ref in refs:
        ref.close()


def _drive(env, decisions: int, act_dim: int) -> list:
    driver = Driver(env)
    driver.reset(seed=3)
    rng = np.random.default_rng(0)
    steps = [driver.step(rng.uniform(-1, 1, (N, act_dim))) for _ in range(decisions)]
    return steps, driver.env_steps


def test_driver_reports_episodes_as_with_gymnasium(mjx_env):
    """The Driver on MJX and on Gymnasium's vector env: same shapes, truncation at the same
    decision with the same episode lengths, same raw step counts."""
    env_id, act_dim = mjx_env.spec.id, mjx_env.single_action_space.shape[0]
    gym_env = make_env(env_id, num_envs=N, seed=0, action_repeat=REPEAT, max_episode_steps=LIMIT)
    ref, ref_env_steps = _drive(gym_env, 12, act_dim)
    got, env_steps = _drive(mjx_env, 12, act_dim)
    gym_env.close()
    assert got[0].obs.shape == ref[0].obs.shape and got[0].obs.dtype == np.float32
    if env_id == "HalfCheetah-v5":  # never terminates: the time limit alone ends episodes
        for g, r in zip(got, ref, strict=True):
            np.testing.assert_array_equal(g.truncated, r.truncated)
            assert not g.terminated.any()
            assert [e["length"] for e in g.episodes] == [e["length"] for e in r.episodes]
        assert got[10].truncated.all() and all(e["length"] == LIMIT for e in got[10].episodes)
        assert env_steps == ref_env_steps == N * (LIMIT + REPEAT)
    for s in got:  # ended worlds: next_obs is the final observation, the next obs a reset one
        for i in np.flatnonzero(s.first):
            assert not np.array_equal(s.next_obs[i], s.obs[i])
        assert all(1 <= e["length"] <= LIMIT for e in s.episodes)


def _toy_task(limit: int) -> MjxTask:
    """A 1-D point (no MJX) to test the batched step's bookkeeping cheaply: x += action; the
    episode terminates when x > 2.5; reward 1 per raw step."""

    def reset(key):
        key, sub = jax.random.split(key)
        x = jax.random.uniform(sub, (1,))
        return WorldState(data=x, obs=x, t=jnp.int32(0), key=key)

    def physics(s, ctrl):
        x = s.data + ctrl
        new = WorldState(data=x, obs=x, t=s.t + 1, key=s.key)
        return new, jnp.float32(1.0), x[0] > 2.5

    low, high = np.zeros(1, np.float32), np.ones(1, np.float32)
    return MjxTask("toy", 1, 1, limit, low, high, reset, physics)


def test_batched_step_bookkeeping_and_chunking():
    """Action repeat stops at the episode end, truncation counts raw steps, ended worlds return
    the reset obs with the final one apart; chunked (lax.map over vmap) equals one vmap."""
    task = _toy_task(5)
    outs = []
    for chunk in (None, 2):
        reset, step = make_batched(task, action_repeat=3, max_episode_steps=5, chunk=chunk)
        state = reset(jax.random.split(jax.random.key(0), 6))
        x0 = np.asarray(state.obs[:, 0])
        actions = jnp.asarray([[1.0], [1.0], [-1.0], [-1.0], [0.0], [1.0]])  # ctrl 1,1,0,0,.5,1
        state, first = step(state, actions)
        state, second = step(state, actions)
        outs.append((first, second))
    (first, second), (c_first, c_second) = outs
    jax.tree.map(np.testing.assert_array_equal, (first, second), (c_first, c_second))
    first, second = jax.device_get((first, second))
    # ctrl 1 (worlds 0, 1, 5): x passes 2.5 on raw step k = 2 (x0 > .5) or 3: the repeat stops
    k = np.where(x0 > 0.5, 2, 3)
    for i in (0, 1, 5):
        assert first["terminated"][i] and not first["truncated"][i]
        assert first["env_steps"][i] == first["reward"][i] == k[i]
        np.testing.assert_allclose(first["final_obs"][i, 0], x0[i] + k[i], rtol=1e-6)
        assert 0.0 <= first["obs"][i, 0] < 1.0  # the reset observation, not the final one
    # ctrl 0 (worlds 2, 3): never terminates; 3 + 2 raw steps = the limit 5, mid-repeat
    assert not (first["terminated"][2:4] | first["truncated"][2:4]).any()
    np.testing.assert_array_equal(second["env_steps"][2:4], [2, 2])
    np.testing.assert_array_equal(second["reward"][2:4], [2.0, 2.0])
    assert second["truncated"][2:4].all() and not second["terminated"][2:4].any()
    # ctrl .5 (world 4): x0 + 1.5 after 3 steps, passes 2.5 one or two raw steps later
    assert first["env_steps"][4] == 3 and not first["terminated"][4]
    assert second["terminated"][4] and second["env_steps"][4] == (1 if x0[4] > 0.5 else 2)


def test_unsupported_id_is_one_line():
    with pytest.raises(EnvError, match="supports HalfCheetah-v5, InvertedPendulum-v5") as err:
        make_env("Hopper-v5", num_envs=2, seed=0, backend="mjx")
    assert "\n" not in str(err.value)


def test_unknown_backend_and_shift_are_one_line_errors():
    with pytest.raises(ConfigError, match="env.backend must be one of gymnasium, mjx"):
        make_env("HalfCheetah-v5", seed=0, backend="brax")
    with pytest.raises(EnvError, match="shifts are not supported on the mjx backend"):
        make_env("HalfCheetah-v5", seed=0, backend="mjx", shift={"kind": "mass", "severity": 2})


def test_missing_mjx_names_the_install_command(monkeypatch):
    import mujoco

    monkeypatch.delattr(mujoco, "mjx", raising=False)
    monkeypatch.setitem(sys.modules, "mujoco.mjx", None)  # `from mujoco import mjx` now fails
    with pytest.raises(EnvError, match=r'pip install -e "\.\[mjx\]"') as err:
        make_env("HalfCheetah-v5", seed=0, backend="mjx")
    assert "\n" not in str(err.value)
