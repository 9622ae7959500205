"""Replay tests: sequences stay in episodes, uniform starts, ring wraparound, state round trip."""

import numpy as np
import pytest

from agents.replay import Replay
from envs import Step


class _Stream:
    """Synthetic vector env whose obs/action/reward encode (episode, t).

    obs = [episode, t, env], action = [episode, t], reward = 1000 * episode + t. Episode
    lengths are drawn from `lengths`; the last transition is terminated or truncated.
    """

    def __init__(self, num_envs, lengths, seed=0):
        self.rng = np.random.default_rng(seed)
        self.lengths, self.num_envs = lengths, num_envs
        self.next_id = 0
        self.ep = np.zeros(num_envs)
        self.t = np.zeros(num_envs)
        self.left = np.zeros(num_envs, int)
        for i in range(num_envs):
            self._new(i)

    def _new(self, i):
        self.ep[i], self.t[i] = self.next_id, 0
        self.left[i] = self.rng.choice(self.lengths)
        self.next_id += 1

    def step(self):
        env = np.arange(self.num_envs)
        obs = np.stack([self.ep, self.t, env], 1).astype(np.float32)
        next_obs = np.stack([self.ep, self.t + 1, env], 1).astype(np.float32)
        action = np.stack([self.ep, self.t], 1).astype(np.float32)
        reward = (1000 * self.ep + self.t).astype(np.float32)
        self.left -= 1
        done = self.left == 0
        terminated = done & (self.ep % 2 == 0)
        self.t += 1
        for i in np.flatnonzero(done):
            self._new(i)
        return Step(obs, action, reward, next_obs, terminated, done & ~terminated, done, [])


def _fill(replay, stream, steps):
    for _ in range(steps):
        replay.add(stream.step())


def _check_sequences(batch, horizon):
    obs, action = batch["obs"], batch["action"]
    n = obs.shape[0]
    assert obs.shape == (n, horizon + 1, 3) and obs.dtype == np.float32
    assert action.shape == (n, horizon, 2) and batch["reward"].shape == (n, horizon)
    assert batch["terminated"].shape == (n, horizon)
    assert batch["terminated"].dtype == np.float32
    ep, t0 = obs[:, :1, 0], obs[:, :1, 1]
    np.testing.assert_array_equal(obs[..., 0], np.broadcast_to(ep, obs.shape[:2]))
    np.testing.assert_array_equal(obs[..., 1], t0 + np.arange(horizon + 1))
    np.testing.assert_array_equal(obs[..., 2], np.broadcast_to(obs[:, :1, 2], obs.shape[:2]))
    np.testing.assert_array_equal(action[..., 0], np.broadcast_to(ep, action.shape[:2]))
    np.testing.assert_array_equal(action[..., 1], t0 + np.arange(horizon))
    np.testing.assert_array_equal(batch["reward"], 1000 * ep + t0 + np.arange(horizon))
    assert not batch["terminated"][:, :-1].any()  # only the last transition may end it


@pytest.mark.parametrize("horizon", [1, 3, 5])
def test_sequences_never_cross_episodes_or_the_write_position(horizon):
    replay = Replay(capacity=60, obs_dim=3, act_dim=2, num_envs=3)
    stream = _Stream(3, lengths=[1, 2, 3, 4, 7, 12])
    rng = np.random.default_rng(0)
    for _ in range(5):  # 5 * 37 steps: the 20-slot rings wrap several times
        _fill(replay, stream, 37)
        _check_sequences(replay.sample(256, horizon, rng, pad=False), horizon)
    assert len(replay) == 60


def test_incremental_validity_matches_full_recompute():
    replay = Replay(capacity=40, obs_dim=3, act_dim=2, num_envs=2)
    stream = _Stream(2, lengths=[1, 3, 5, 9])
    replay.num_valid(3)  # start tracking horizon 3 before any data
    _fill(replay, stream, 57)
    fresh = Replay(capacity=40, obs_dim=3, act_dim=2, num_envs=2)
    fresh.load_state_dict(replay.state_dict())
    assert fresh.num_valid(3) == replay.num_valid(3) > 0
    np.testing.assert_array_equal(fresh._valid[3], replay._valid[3])


@pytest.mark.parametrize("lengths", [[1] * 20 + [3, 4], [1000]])  # sparse, dense
def test_starts_are_uniform_over_valid_positions(lengths):
    replay = Replay(capacity=120, obs_dim=3, act_dim=2, num_envs=2)
    stream, stored = _Stream(2, lengths=lengths), {}
    for _ in range(45):  # no wraparound: 60 slots per env
        step = stream.step()
        replay.add(step)
        for ep, _, env in step.obs.tolist():
            stored[(ep, env)] = stored.get((ep, env), 0) + 1
    horizon = 3
    valid = {(ep, t, env) for (ep, env), n in stored.items() for t in range(n - horizon + 1)}
    assert replay.num_valid(horizon) == len(valid)
    assert (len(valid) * 8 < len(replay)) == (lengths != [1000])  # both sampling paths
    batch = replay.sample(200 * len(valid), horizon, np.random.default_rng(1), pad=False)
    _check_sequences(batch, horizon)
    keys, counts = np.unique(batch["obs"][:, 0], axis=0, return_counts=True)
    assert {tuple(k) for k in keys.tolist()} == valid
    assert counts.min() > 200 * 0.6 and counts.max() < 200 * 1.4  # ~5 sigma at 200 draws


def test_ring_wraparound_keeps_only_the_newest_transitions():
    replay = Replay(capacity=10, obs_dim=3, act_dim=2, num_envs=1)
    _fill(replay, _Stream(1, lengths=[1000]), 25)  # one long episode, t = 0..24
    assert len(replay) == 10 and replay.num_valid(3) == 8
    batch = replay.sample(2000, 3, np.random.default_rng(0), pad=False)
    _check_sequences(batch, 3)
    assert set(batch["obs"][:, 0, 1].tolist()) == set(range(15, 23))


def test_broken_continuity_starts_a_new_episode():
    replay = Replay(capacity=20, obs_dim=3, act_dim=2, num_envs=1)
    stream = _Stream(1, lengths=[1000])
    _fill(replay, stream, 4)
    stream.t[:] += 10  # like Driver.reset mid-episode: obs no longer follows next_obs
    _fill(replay, stream, 4)
    assert replay.num_valid(4) == 2
    _check_sequences(replay.sample(64, 3, np.random.default_rng(0), pad=False), 3)


def test_state_dict_round_trip_through_npz(tmp_path):
    replay = Replay(capacity=30, obs_dim=3, act_dim=2, num_envs=3)
    stream = _Stream(3, lengths=[2, 5, 8])
    _fill(replay, stream, 23)
    np.savez(tmp_path / "replay.npz", **replay.state_dict())
    with np.load(tmp_path / "replay.npz", allow_pickle=False) as data:
        restored = Replay(capacity=30, obs_dim=3, act_dim=2, num_envs=3)
        restored.load_state_dict(dict(data))
    for key, value in replay.state_dict().items():
        np.testing.assert_array_equal(restored.state_dict()[key], value, err_msg=key)
    a = replay.sample(32, 2, np.random.default_rng(7))
    b = restored.sample(32, 2, np.random.default_rng(7))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    step = stream.step()  # both continue identically
    replay.add(step)
    restored.add(step)
    np.testing.assert_array_equal(replay.episode, restored.episode)


def test_errors():
    replay = Replay(capacity=10, obs_dim=3, act_dim=2, num_envs=2)
    with pytest.raises(ValueError, match="consecutive"):
        replay.sample(4, 2, np.random.default_rng(0), pad=False)
    with pytest.raises(ValueError, match="horizon"):
        replay.sample(4, 6, np.random.default_rng(0), pad=False)
    with pytest.raises(Exception, match="shape"):
        Replay(capacity=12, obs_dim=3, act_dim=2, num_envs=2).load_state_dict(replay.state_dict())


@pytest.mark.parametrize("horizon", [1, 3, 5])
def test_padded_windows_mask_everything_past_the_episode_end(horizon):
    replay = Replay(capacity=60, obs_dim=3, act_dim=2, num_envs=3)
    stream = _Stream(3, lengths=[1, 2, 3, 4, 7, 12])
    rng = np.random.default_rng(0)
    for _ in range(5):
        _fill(replay, stream, 37)
        batch = replay.sample(512, horizon, rng)
        obs, mask = batch["obs"], batch["mask"]
        assert mask.shape == (512, horizon) and mask[:, 0].all()
        assert (np.diff(mask, axis=1) <= 0).all()  # once out of the episode, stays out
        ep, t0 = obs[:, :1, 0], obs[:, :1, 1]
        valid = mask.astype(bool)
        # Valid positions continue the start's episode step by step; padding is zeroed.
        steps = np.broadcast_to(t0 + np.arange(horizon), mask.shape)
        np.testing.assert_array_equal(batch["action"][..., 1][valid], steps[valid])
        np.testing.assert_array_equal(
            batch["action"][..., 0][valid], np.broadcast_to(ep, mask.shape)[valid]
        )
        assert (batch["reward"][~valid] == 0).all() and (batch["terminated"][~valid] == 0).all()
        # A terminal transition can sit at any position, the first included.
        assert (batch["terminated"][:, 0] > 0).any() or horizon == 1
        # next_obs at a valid position k is obs of step t0+k+1 of the same episode.
        np.testing.assert_array_equal(obs[:, 1:, 1][valid], (steps + 1)[valid])
        np.testing.assert_array_equal(obs[:, 1:, 0][valid], np.broadcast_to(ep, mask.shape)[valid])


def test_padded_sampling_covers_every_stored_transition_uniformly():
    replay = Replay(capacity=30, obs_dim=3, act_dim=2, num_envs=1)
    _fill(replay, _Stream(1, lengths=[1, 2, 5]), 30)
    batch = replay.sample(30000, 4, np.random.default_rng(3))
    firsts = batch["action"][:, 0]  # (episode, t) identifies the start transition
    _, counts = np.unique(firsts, axis=0, return_counts=True)
    assert len(counts) == 30  # every stored transition can start a window
    assert counts.min() > 0.8 * 1000 and counts.max() < 1.2 * 1000


def test_sample_mixed_keeps_old_data_at_the_configured_share():
    from envs import Step

    replay = Replay(1000, 1, 1, 1)
    for x in range(300):  # 300 old-world transitions, then 100 new-world ones
        o = np.array([[float(x)]], np.float32)
        replay.add(
            Step(
                o,
                o,
                np.zeros(1, np.float32),
                o + 1,
                np.zeros(1, bool),
                np.zeros(1, bool),
                np.zeros(1, bool),
                [],
            )
        )
        if x == 199:
            since = replay.added
    rng = np.random.default_rng(0)
    shares = []
    for _ in range(20):
        batch = replay.sample_mixed(64, 3, rng, since=since, share=0.25)
        new = batch["obs"][:, 0, 0] >= 200
        shares.append(new.mean())
        assert len(np.unique(batch["obs"][~new, 0, 0])) > 20  # old data spread, not a corner
    assert np.allclose(shares, 16 / 64)  # round(0.25 * 64) new, the rest (75%) old, every batch
    state = replay.state_dict()
    again = Replay(1000, 1, 1, 1)
    again.load_state_dict(state)
    assert again.added == 300


def test_sample_mixed_finds_the_few_trainable_new_transitions_among_held_out_ones():
    """After a detected change the next episode is held out, so the new world's range can hold
    one trainable transition among 1500 held out (rejection sampling gave up there, in a
    continual run); every new-share window must start at it."""
    from envs import Step

    replay = Replay(2000, 1, 1, 1)

    def add(x, held, last=False):
        o = np.array([[float(x)]], np.float32)
        end = np.array([last])
        replay.add(Step(o, o, np.zeros(1, np.float32), o + 1, np.zeros(1, bool), end, end, []),
                   holdout=np.array([held]))  # fmt: skip

    for x in range(300):
        add(x, held=False, last=x == 299)
    since = replay.added
    add(1000, held=False, last=True)
    for x in range(1500):
        add(2000 + x, held=True, last=x == 1499)
    batch = replay.sample_mixed(64, 1, np.random.default_rng(0), since=since, share=0.5)
    starts = batch["obs"][:, 0, 0]
    new = starts >= 1000
    assert new.sum() == 32 and set(starts[new]) == {1000.0}
    assert (starts[~new] < 300).all()
