"""Replay: a host-side numpy ring buffer of transitions that samples short sub-sequences.

Host only. Storage is per env and contiguous in time, so a sub-sequence is a run of slots.
"""

from __future__ import annotations

import numpy as np

from worldmodel.errors import CheckpointError

_ARRAYS = ("obs", "action", "reward", "next_obs", "terminated", "episode")
_COUNTERS = ("pos", "size", "next_episode", "current_episode", "last_next_obs", "in_episode")


class Replay:
    """Ring buffer of `capacity` transitions split evenly over `num_envs` envs.

    Each env owns `capacity // num_envs` slots written in time order by `add`; every slot
    stores obs, action, reward, next_obs, terminated and an episode id. A transition starts a
    new episode id when its env's previous transition ended (terminated or truncated) or did
    not lead to its obs (e.g. after `Driver.reset`).

    `sample(B, H, rng)` draws start slots uniformly over every valid start: the H transitions
    from the start are stored, consecutive in time, of one episode, and do not run past the
    newest slot into overwritten data. An episode with fewer than H stored transitions is
    therefore never sampled. Validity masks are kept per horizon and updated on each `add`,
    so sampling costs O(B * H) plus rare rejection rounds.

    Held-out episodes (`add(step, holdout=mask)`) are stored for calibration but never sampled
    for training: their slots carry episode id -2 - id. `holdout_stream` returns them.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, num_envs: int):
        if num_envs < 1 or capacity < num_envs:
            raise ValueError(f"need capacity ({capacity}) >= num_envs ({num_envs}) >= 1")
        self.num_envs, self.obs_dim, self.act_dim = num_envs, obs_dim, act_dim
        self.slots = capacity // num_envs  # per env
        shape = (num_envs, self.slots)
        self.obs = np.zeros((*shape, obs_dim), np.float32)
        self.action = np.zeros((*shape, act_dim), np.float32)
        self.reward = np.zeros(shape, np.float32)
        self.next_obs = np.zeros((*shape, obs_dim), np.float32)
        self.terminated = np.zeros(shape, bool)
        self.episode = np.full(shape, -1, np.int64)
        self.pos = 0  # next slot to write, shared by all envs (they are stepped together)
        self.size = 0  # filled slots per env
        self.next_episode = 0  # next unused episode id (unique over all envs)
        self.current_episode = np.full(num_envs, -1, np.int64)
        self.last_next_obs = np.zeros((num_envs, obs_dim), np.float32)
        self.in_episode = np.zeros(num_envs, bool)  # the env's last transition did not end it
        self._valid: dict[int, np.ndarray] = {}  # horizon -> (N, slots) bool start mask
        self._count: dict[int, int] = {}
        self.held = 0  # stored held-out transitions
        self.added = 0  # add() calls ever (per env); marks where a new world's data begins

    def __len__(self) -> int:
        """Number of stored transitions (over all envs)."""
        return self.num_envs * self.size

    def add(self, step, holdout=None) -> None:
        """Store one `envs.Step` (obs (N, D), action (N, A), reward (N,), next_obs (N, D), ...).

        holdout (N,) bool: these envs' transitions are kept for calibration, never for training
        (mark whole episodes, not single steps, so no training window borders on them).
        """
        obs_shape = (self.num_envs, self.obs_dim)
        act_shape = (self.num_envs, self.act_dim)
        obs = np.asarray(step.obs, np.float32)
        action = np.asarray(step.action, np.float32)
        next_obs = np.asarray(step.next_obs, np.float32)
        if obs.shape != obs_shape or next_obs.shape != obs_shape or action.shape != act_shape:
            raise ValueError(
                f"step shapes obs {obs.shape}, next_obs {next_obs.shape}, action "
                f"{action.shape} do not match (N, D) = {obs_shape}, (N, A) = {act_shape}"
            )
        continues = self.in_episode & np.all(obs == self.last_next_obs, axis=1)
        fresh = np.flatnonzero(~continues)
        self.current_episode[fresh] = self.next_episode + np.arange(len(fresh))
        self.next_episode += len(fresh)

        p = self.pos
        self.obs[:, p] = obs
        self.action[:, p] = action
        self.reward[:, p] = step.reward
        self.next_obs[:, p] = next_obs
        self.terminated[:, p] = step.terminated
        held = np.zeros(self.num_envs, bool) if holdout is None else np.asarray(holdout, bool)
        self.held += int(held.sum()) - int((self.episode[:, p] < -1).sum())
        self.episode[:, p] = np.where(held, -2 - self.current_episode, self.current_episode)
        self.last_next_obs[:] = next_obs
        self.in_episode = ~(np.asarray(step.terminated, bool) | np.asarray(step.truncated, bool))
        self.pos = (p + 1) % self.slots
        self.size = min(self.size + 1, self.slots)
        self.added += 1
        for horizon in self._valid:  # only starts whose window holds slot p can change
            self._refresh(horizon, (p - horizon + 1 + np.arange(horizon)) % self.slots)

    def _starts_valid(self, starts: np.ndarray, horizon: int) -> np.ndarray:
        """(N, K) bool: may each of `starts` (K,) begin a stored H-transition sub-sequence?"""
        oldest = self.pos if self.size == self.slots else 0
        age = (starts - oldest) % self.slots  # 0 for the oldest stored slot
        in_store = age + horizon <= self.size
        ends = (starts + horizon - 1) % self.slots
        same = self.episode[:, starts] == self.episode[:, ends]  # ids are contiguous runs
        return in_store[None, :] & same & (self.episode[:, starts] >= 0)

    def _refresh(self, horizon: int, starts: np.ndarray) -> None:
        mask = self._valid[horizon]
        new = self._starts_valid(starts, horizon)
        self._count[horizon] += int(new.sum()) - int(mask[:, starts].sum())
        mask[:, starts] = new

    def num_valid(self, horizon: int) -> int:
        """Number of valid start slots for sub-sequences of `horizon` transitions."""
        if not 1 <= horizon <= self.slots:
            raise ValueError(f"horizon must be in [1, {self.slots}], got {horizon}")
        if horizon not in self._valid:
            self._valid[horizon] = np.zeros((self.num_envs, self.slots), bool)
            self._count[horizon] = 0
            self._refresh(horizon, np.arange(self.slots))
        return self._count[horizon]

    def sample(
        self, batch_size: int, horizon: int, rng: np.random.Generator, *, pad: bool = True
    ) -> dict:
        """B sub-sequences of H transitions.

        pad=True (training): starts are uniform over every stored transition; a window that
        runs past its episode's end (or the newest slot) is padded and `mask` (B, H) is 0 from
        there on. So an episode's last transitions, terminal ones included, appear at every
        position of the window, first position included (without this, the value and
        termination heads would never see a terminal transition from an encoded latent).
        pad=False: starts uniform over windows lying wholly inside one episode (mask all 1).

        Returns obs (B, H+1, D) float32 with obs[:, k+1] = next_obs of transition k (so the
        last valid one may be a true final obs; padding repeats it), action (B, H, A) float32
        (0 in padding), reward (B, H), terminated (B, H) and mask (B, H), all float32.
        """
        if pad:
            return self._sample_padded(batch_size, horizon, rng)
        count = self.num_valid(horizon)
        if count == 0:
            raise ValueError(
                f"no stored episode has {horizon} consecutive transitions yet ({len(self)} stored)"
            )
        mask = self._valid[horizon]
        total = self.num_envs * self.size  # candidates come from filled slots only
        if count * 8 < total:  # sparse: enumerate valid starts, O(capacity)
            flat = np.flatnonzero(mask[:, : self.size])
            env, start = np.divmod(flat[rng.integers(0, len(flat), batch_size)], self.size)
        else:  # rejection keeps draws uniform over valid starts; ~1 round on average
            envs, starts = [], []
            need = batch_size
            while need > 0:
                draws = int(1.5 * need * total / count) + 8
                e = rng.integers(0, self.num_envs, draws)
                s = rng.integers(0, self.size, draws)
                ok = mask[e, s]
                envs.append(e[ok][:need])
                starts.append(s[ok][:need])
                need -= len(envs[-1])
            env, start = np.concatenate(envs), np.concatenate(starts)
        return self._gather(env, start, np.ones((batch_size, horizon), bool))

    def sample_mixed(
        self, batch_size: int, horizon: int, rng: np.random.Generator, *, since: int, share: float
    ) -> dict:
        """Padded windows, `share` of them (rounded) starting in data added since add() number
        `since` (the new world's), the rest in older data (the old worlds': kept, so the model
        does not forget them). All new when there is no older data stored, all old when no
        new. Same keys as `sample`.
        """
        recent = min(max(self.added - since, 0), self.size)
        n_new = int(round(share * batch_size))
        if recent == self.size:
            n_new = batch_size
        elif recent == 0:
            n_new = 0
        cut = self.size - recent  # ages [0, cut) are old, [cut, size) new
        oldest = self.pos if self.size == self.slots else 0
        new_slots = (oldest + np.arange(cut, self.size)) % self.slots
        if recent and not (self.episode[:, new_slots] >= 0).any():  # all new data held out
            n_new = 0
        parts = [
            self._sample_padded(batch_size - n_new, horizon, rng, ages=(0, cut)),
            self._sample_padded(n_new, horizon, rng, ages=(cut, self.size)),
        ]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _sample_padded(
        self, batch_size: int, horizon: int, rng: np.random.Generator, ages=None
    ) -> dict:
        if self.size == 0:
            raise ValueError("the replay is empty")
        lo, hi = (0, self.size) if ages is None else ages
        oldest = self.pos if self.size == self.slots else 0
        env = rng.integers(0, self.num_envs, batch_size)
        age = rng.integers(lo, hi, batch_size) if batch_size else np.zeros(0, np.int64)
        start = (oldest + age) % self.slots
        if self.held:  # reject held-out starts (uniform over the trainable ones)
            if self.held >= len(self):
                raise ValueError("every stored transition is held out for calibration")
            ok = self.episode[env, start] >= 0
            for _ in range(20):
                if ok.all():
                    break
                bad = np.flatnonzero(~ok)
                env[bad] = rng.integers(0, self.num_envs, len(bad))
                age[bad] = rng.integers(lo, hi, len(bad))
                start[bad] = (oldest + age[bad]) % self.slots
                ok[bad] = self.episode[env[bad], start[bad]] >= 0
            else:  # few trainable starts in the range (e.g. a new world's, mostly held out): exact
                bad = np.flatnonzero(~ok)
                ages = np.arange(lo, hi)
                where = np.flatnonzero(self.episode[:, (oldest + ages) % self.slots] >= 0)
                if not len(where):
                    raise ValueError("no trainable (not held-out) transition in the sampled range")
                pick = rng.choice(where, len(bad))
                env[bad], age[bad] = pick // len(ages), ages[pick % len(ages)]
                start[bad] = (oldest + age[bad]) % self.slots
        t = (start[:, None] + np.arange(horizon)) % self.slots  # (B, H)
        same = self.episode[env[:, None], t] == self.episode[env, start][:, None]
        stored = age[:, None] + np.arange(horizon) < self.size
        valid = np.logical_and.accumulate(same & stored, axis=1)
        return self._gather(env, start, valid)

    def _gather(self, env: np.ndarray, start: np.ndarray, valid: np.ndarray) -> dict:
        """Batch for windows (env, start) of H = valid.shape[1] slots; invalid slots padded."""
        horizon = valid.shape[1]
        # Padding repeats the last valid slot, so padded next_obs equal the final observation.
        last = valid.sum(axis=1, keepdims=True) - 1  # >= 0: the start slot is always valid
        k = np.minimum(np.arange(horizon)[None, :], last)
        t = (start[:, None] + k) % self.slots  # (B, H)
        e = env[:, None]
        obs = np.concatenate([self.obs[env, start][:, None], self.next_obs[e, t]], axis=1)
        mask = valid.astype(np.float32)
        return {
            "obs": obs,
            "action": self.action[e, t] * mask[..., None],
            "reward": self.reward[e, t] * mask,
            "terminated": self.terminated[e, t].astype(np.float32) * mask,
            "mask": mask,
        }

    def holdout_stream(self, max_transitions: int, *, since: int = 0) -> dict[str, np.ndarray]:
        """The newest `max_transitions` held-out transitions (added at or after add() number
        `since`), time-ordered per env.

        Returns obs (T, D), action (T, A), next_obs (T, D), terminated (T,), first (T,) bool
        (True where a held-out episode, or the returned part of it, begins).
        """
        return self._stream(max_transitions, since=since, held_only=True)

    def recent_stream(self, max_transitions: int, *, since: int = 0) -> dict[str, np.ndarray]:
        """As `holdout_stream`, over every stored transition (held out or not): what the agent
        lived through since add() number `since`."""
        return self._stream(max_transitions, since=since, held_only=False)

    def _stream(self, max_transitions: int, *, since: int, held_only: bool) -> dict:
        oldest = self.pos if self.size == self.slots else 0
        first_age = max(self.size - max(self.added - since, 0), 0)
        idx = (oldest + np.arange(first_age, self.size)) % self.slots
        parts = []
        for e in range(self.num_envs):
            ep = self.episode[e, idx]
            t = idx[ep < -1] if held_only else idx
            ids = self.episode[e, t]
            first = np.concatenate([[True], ids[1:] != ids[:-1]]) if len(t) else np.zeros(0, bool)
            parts.append((e, t, first))
        out = {
            "obs": np.concatenate([self.obs[e, t] for e, t, _ in parts]),
            "action": np.concatenate([self.action[e, t] for e, t, _ in parts]),
            "next_obs": np.concatenate([self.next_obs[e, t] for e, t, _ in parts]),
            "terminated": np.concatenate([self.terminated[e, t] for e, t, _ in parts]),
            "first": np.concatenate([f for _, _, f in parts]),
        }
        out = {k: v[-max_transitions:] for k, v in out.items()}
        if len(out["first"]):
            out["first"][0] = True
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to restore the buffer, as numpy arrays (savable with np.savez)."""
        d = {k: getattr(self, k).copy() for k in _ARRAYS}
        for k in _COUNTERS:
            d[k] = np.array(getattr(self, k), copy=True)
        d["added"] = np.array(self.added)
        return d

    def load_state_dict(self, d: dict[str, np.ndarray]) -> None:
        """Restore from `state_dict()` output; the buffer shapes must match."""
        for k in _ARRAYS + _COUNTERS:
            if k not in d:
                raise CheckpointError(f"replay state lacks {k!r}")
        for k in _ARRAYS:
            have, got = getattr(self, k).shape, np.shape(d[k])
            if have != got:
                raise CheckpointError(
                    f"replay {k} has shape {got}, this buffer expects {have} "
                    "(capacity, num_envs or env dims changed?)"
                )
            setattr(self, k, np.array(d[k], dtype=getattr(self, k).dtype))
        self.pos, self.size, self.next_episode = (int(d[k]) for k in _COUNTERS[:3])
        self.current_episode = np.array(d["current_episode"], np.int64)
        self.last_next_obs = np.array(d["last_next_obs"], np.float32)
        self.in_episode = np.array(d["in_episode"], bool)
        self._valid.clear()
        self._count.clear()
        self.held = int((self.episode < -1).sum())
        self.added = int(d["added"]) if "added" in d else self.size
