"""Latent world model: encoder, K-head dynamics ensemble, reward, termination, critics, policy prior.

`WorldModel` is a static description (hyperparameters + flax modules); its methods are pure
functions of a params dict, so they can be jitted, vmapped and scanned freely.
Shapes: obs (..., D), latent z (..., L), action a (..., A); K dynamics heads, Q critics.
Beside the latent heads, K observation heads predict the next observation's change (in symlog
space) with a mean and a variance each (a probabilistic ensemble, as PETS): the latent is
built to be compact (LayerNorm + SimNorm squash a far-away observation onto the same simplex
corners as a near one, so latent heads cannot see such novelty); the observation heads see the
raw input, so their disagreement does. They are trained on the same batch, on their own
parameters, and only feed the uncertainty scores (worldmodel.uncertainty), never the planner;
their width (`obs_hidden_dim`) is their own, so widening the model leaves the probe as benchmarked.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from worldmodel import ops
from worldmodel.errors import ConfigError
from worldmodel.networks import MLP, StateActionMLP, ensemble

BOUNDS_SHARPNESS = 1e-3  # obs units over which the known termination rule goes from 0 to 1


def _check_bounds(bounds, obs_dim: int) -> tuple:
    """((index, low, high), ...) with None -> -inf / inf; a clear error for a malformed rule."""
    out = []
    for b in bounds:
        ok = isinstance(b, list | tuple) and len(b) == 3 and isinstance(b[0], int)
        ok = ok and all(v is None or isinstance(v, int | float) for v in b[1:])
        if not ok or not 0 <= b[0] < obs_dim:
            raise ConfigError(
                f"model.termination_bounds entry {b!r} must be [obs index in 0..{obs_dim - 1}, "
                "low, high] with numbers or null"
            )
        low = -float("inf") if b[1] is None else float(b[1])
        high = float("inf") if b[2] is None else float(b[2])
        if not low < high:
            raise ConfigError(f"model.termination_bounds entry {list(b)!r} needs low < high")
        out.append((int(b[0]), low, high))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class WorldModel:
    """Hyperparameters of the model. Build with `make_world_model(obs_dim, act_dim, **model_cfg)`."""

    obs_dim: int
    act_dim: int
    latent_dim: int = 64
    hidden_dim: int = 256
    obs_hidden_dim: int = 128
    num_layers: int = 2
    num_heads: int = 5
    num_q: int = 2
    simnorm_group: int = 8
    num_bins: int = 101
    vmin: float = -10.0
    vmax: float = 10.0
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    termination_from: str = "action"  # P(terminal) of: "action" (z, a) | "next" latent | "bounds"
    # termination_from='bounds': the task's known rule, ((obs index, low, high), ...): the episode
    # ends when an observation dim leaves its open interval (None = unbounded on that side).
    termination_bounds: tuple = ()

    def __post_init__(self):
        if self.latent_dim % self.simnorm_group:
            raise ConfigError(
                f"model.latent_dim={self.latent_dim} must be divisible by "
                f"model.simnorm_group={self.simnorm_group}"
            )
        if self.num_heads < 2:
            raise ConfigError("model.num_heads must be >= 2: disagreement needs an ensemble")
        if self.termination_from not in ("next", "action", "bounds"):
            raise ConfigError(
                "model.termination_from must be 'action', 'next' or 'bounds', "
                f"got {self.termination_from!r}"
            )
        object.__setattr__(self, "_bounds", _check_bounds(self.termination_bounds, self.obs_dim))
        # a config slice gives lists; the model is a static (hashed) jit argument
        object.__setattr__(self, "termination_bounds", tuple(map(tuple, self.termination_bounds)))
        if self.termination_from == "bounds" and not self._bounds:
            raise ConfigError(
                "model.termination_from=bounds needs model.termination_bounds, e.g. "
                "[[0, 0.7, null], [1, -0.2, 0.2]] (obs index, low, high) as in configs/tasks/hopper.yaml"
            )
        hidden = (self.hidden_dim,) * self.num_layers
        L, g = self.latent_dim, self.simnorm_group
        object.__setattr__(self, "_encoder", MLP((self.hidden_dim,), L, simnorm_group=g))
        object.__setattr__(
            self,
            "_dynamics",
            ensemble(StateActionMLP, self.num_heads, hidden=hidden, out=L, simnorm_group=g),
        )
        # The same architecture with one member: applies a single head sliced out of the stack.
        object.__setattr__(
            self,
            "_dynamics_one",
            ensemble(StateActionMLP, 1, hidden=hidden, out=L, simnorm_group=g),
        )
        # termination_from='action': the reward head also gives the termination logit of (z_t, a_t)
        # (one column, no extra MLP). 'next' (TD-MPC2's choice): a small head on the latent
        # reached, z_t+1 (whether a state is terminal is a property of the state). On Hopper both
        # memorise the ~2% terminal transitions they train on and miss most held-out ones
        # (P 0.13 vs 0.16 on held-out falls in matched runs; BENCHMARKS.md). 'bounds': the same
        # small head regresses the observation dims of the task's known termination rule from
        # z_t+1 (a dense target on every step, not a rare label), and the rule is applied to them.
        extra = int(self.termination_from == "action")
        object.__setattr__(
            self, "_reward", StateActionMLP(hidden, self.num_bins + extra, zero_init=True)
        )
        n_term = len(self._bounds) if self.termination_from == "bounds" else 1
        object.__setattr__(self, "_term", MLP((self.hidden_dim,), n_term, zero_init=True))
        object.__setattr__(
            self,
            "_q",
            ensemble(StateActionMLP, self.num_q, hidden=hidden, out=self.num_bins, zero_init=True),
        )
        object.__setattr__(self, "_pi", MLP(hidden, 2 * self.act_dim))
        object.__setattr__(
            self,
            "_obs_heads",
            ensemble(
                StateActionMLP,
                self.num_heads,
                hidden=(self.obs_hidden_dim,) * self.num_layers,
                out=2 * self.obs_dim,
                layer_norm=False,
            ),
        )

    # ----------------------------------------------------------------------------- init
    def init(self, *, key: jax.Array) -> dict:
        """Fresh params {'encoder','dynamics','reward','q','pi','obs_heads'} (+ 'term' with
        termination_from='next' or 'bounds')."""
        keys = jax.random.split(key, 5)
        obs = jnp.zeros((1, self.obs_dim))
        z = jnp.zeros((1, self.latent_dim))
        a = jnp.zeros((1, self.act_dim))
        zk = jnp.zeros((self.num_heads, 1, self.latent_dim))
        ak = jnp.zeros((self.num_heads, 1, self.act_dim))
        zq = jnp.zeros((self.num_q, 1, self.latent_dim))
        aq = jnp.zeros((self.num_q, 1, self.act_dim))
        params = {
            "encoder": self._encoder.init(keys[0], obs)["params"],
            "dynamics": self._dynamics.init(keys[1], zk, ak)["params"],
            "reward": self._reward.init(keys[2], z, a)["params"],
            "q": self._q.init(keys[3], zq, aq)["params"],
            "pi": self._pi.init(keys[4], z)["params"],
            # its own key stream, so adding these heads left the other initial params unchanged
            "obs_heads": self._obs_heads.init(
                jax.random.fold_in(key, 5),
                jnp.zeros((self.num_heads, 1, self.obs_dim)),
                jnp.zeros((self.num_heads, 1, self.act_dim)),
            )["params"],
        }
        if self.termination_from in ("next", "bounds"):  # its own key stream too
            params["term"] = self._term.init(jax.random.fold_in(key, 6), z)["params"]
        return params

    @property
    def rule(self) -> tuple:
        """The known termination rule, parsed: ((obs index, low, high), ...), +-inf if open."""
        return self._bounds

    # ----------------------------------------------------------------------------- parts
    def encode(self, params: dict, obs: jax.Array) -> jax.Array:
        """obs (..., D) -> z (..., L)."""
        return self._encoder.apply({"params": params["encoder"]}, obs)

    def next_split(self, params: dict, z: jax.Array, a: jax.Array) -> jax.Array:
        """Head k on its own input: z (K, ..., L), a (K, ..., A) -> (K, ..., L)."""
        return self._dynamics.apply({"params": params["dynamics"]}, z, a)

    def next_head(self, params: dict, z: jax.Array, a: jax.Array, head: jax.Array) -> jax.Array:
        """Head number `head` (a traced int) alone: z (..., L), a (..., A) -> (..., L)."""
        one = jax.tree.map(
            lambda x: jax.lax.dynamic_slice_in_dim(x, head, 1, axis=0), params["dynamics"]
        )
        return self._dynamics_one.apply({"params": one}, z[None], a[None])[0]

    def next_all(self, params: dict, z: jax.Array, a: jax.Array) -> jax.Array:
        """Every head on the same input: z (..., L), a (..., A) -> (K, ..., L)."""
        K = self.num_heads
        return self.next_split(
            params, jnp.broadcast_to(z, (K, *z.shape)), jnp.broadcast_to(a, (K, *a.shape))
        )

    def next_mean(self, params: dict, z: jax.Array, a: jax.Array) -> jax.Array:
        """Ensemble-mean next latent (..., L) (still on the SimNorm simplex product)."""
        return self.next_all(params, z, a).mean(axis=0)

    def disagreement(self, params: dict, z: jax.Array, a: jax.Array) -> jax.Array:
        """Epistemic score (...,): variance across the K heads' next latents, mean over dims.

        Zero when all heads agree (inside the data), grows where they were never constrained.
        """
        return self.next_all(params, z, a).var(axis=0).mean(axis=-1)

    def obs_moments(self, params: dict, obs: jax.Array, a: jax.Array):
        """Observation heads: (mean (K, ..., D), variance (K, ..., D)) of symlog(obs') - symlog(obs).

        The variance is each head's aleatoric estimate (log-variance softly kept in [-10, 4]);
        the spread of the K means is the epistemic part.
        """
        K = self.num_heads
        x = ops.symlog(obs)
        out = self._obs_heads.apply(
            {"params": params["obs_heads"]},
            jnp.broadcast_to(x, (K, *x.shape)),
            jnp.broadcast_to(a, (K, *a.shape)),
        )
        mean, raw = jnp.split(out, 2, axis=-1)
        log_var = -3.0 + 7.0 * jnp.tanh(raw / 7.0)  # in (-10, 4), ~raw - 3 near 0
        return mean, jnp.exp(log_var)

    @staticmethod
    def obs_target(obs: jax.Array, next_obs: jax.Array) -> jax.Array:
        """What the observation heads predict: symlog(next_obs) - symlog(obs) (..., D)."""
        return ops.symlog(next_obs) - ops.symlog(obs)

    def reward_logits(self, params: dict, z: jax.Array, a: jax.Array) -> jax.Array:
        """Reward two-hot logits (..., num_bins) for taking a in z."""
        return self._reward.apply({"params": params["reward"]}, z, a)[..., : self.num_bins]

    def reward_and_termination_logits(self, params: dict, z, a, z_next):
        """(reward two-hot logits (..., num_bins), termination logit (...,)) of the step from z
        (..., L) by a (..., A) to z_next (..., L). With termination_from='action' both come from
        one pass of the reward MLP (its last column), where calling `reward_logits` and
        `termination_logit` apart would run it, and its backward pass, twice."""
        if self.termination_from != "action":
            return self.reward_logits(params, z, a), self.termination_logit(params, z, a, z_next)
        out = self._reward.apply({"params": params["reward"]}, z, a)
        return out[..., : self.num_bins], out[..., -1]

    def reward(self, params: dict, z: jax.Array, a: jax.Array) -> jax.Array:
        """Predicted reward (...,) for taking a in z."""
        return ops.two_hot_inv(self.reward_logits(params, z, a), self.vmin, self.vmax)

    def bounded_obs(self, params: dict, z: jax.Array) -> jax.Array:
        """termination_from='bounds': the rule's observation dims (..., n) read from z (..., L)."""
        return self._term.apply({"params": params["term"]}, z)

    def rule_dims(self, obs: jax.Array) -> jax.Array:
        """The observation dims (..., n) the termination rule reads, from obs (..., D)."""
        return obs[..., [i for i, _, _ in self._bounds]]

    def bounds_margin(self, x: jax.Array) -> jax.Array:
        """Signed distance (...,) of bounded-obs values x (..., n) to the rule's edge: > 0 inside
        every interval, < 0 once any dim is out (the episode ended)."""
        low = jnp.asarray([b[1] for b in self._bounds], jnp.float32)
        high = jnp.asarray([b[2] for b in self._bounds], jnp.float32)
        return jnp.minimum(x - low, high - x).min(axis=-1)

    def termination_logit(self, params: dict, z: jax.Array, a: jax.Array, z_next: jax.Array):
        """Logit (...,) that the step from z (..., L) by a (..., A) to z_next (..., L) ended the
        episode: of z_next alone (termination_from='next'), of (z, a) ('action'), or the known
        rule on the obs dims read from z_next ('bounds': -margin / 1e-3, a hard rule except
        within 1e-3 of an edge)."""
        if self.termination_from == "bounds":
            margin = self.bounds_margin(self.bounded_obs(params, z_next))
            return jnp.clip(-margin / BOUNDS_SHARPNESS, -30.0, 30.0)
        if self.termination_from == "next":
            return self._term.apply({"params": params["term"]}, z_next)[..., 0]
        return self._reward.apply({"params": params["reward"]}, z, a)[..., -1]

    def termination(self, params: dict, z: jax.Array, a: jax.Array, z_next: jax.Array):
        """P(terminated) (...,) of that step (see `termination_logit`)."""
        return jax.nn.sigmoid(self.termination_logit(params, z, a, z_next))

    def q_logits(self, q_params: dict, z: jax.Array, a: jax.Array) -> jax.Array:
        """All critics: (Q, ..., num_bins). Pass params['q'] or the target copy."""
        n = self.num_q
        zq = jnp.broadcast_to(z, (n, *z.shape))
        aq = jnp.broadcast_to(a, (n, *a.shape))
        return self._q.apply({"params": q_params}, zq, aq)

    def q_values(self, q_params: dict, z: jax.Array, a: jax.Array) -> jax.Array:
        """(Q, ...) decoded values of every critic."""
        return ops.two_hot_inv(self.q_logits(q_params, z, a), self.vmin, self.vmax)

    def pi(self, params: dict, z: jax.Array, *, key: jax.Array | None = None, eps=None):
        """Policy prior. z (..., L) -> (sampled action (..., A), log_prob (...,), mean action (..., A)).

        The sample's noise comes from `key`, or is given as `eps` (..., A)."""
        out = self._pi.apply({"params": params["pi"]}, z)
        mean, raw = jnp.split(out, 2, axis=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (
            jnp.tanh(raw) + 1.0
        )
        action, log_prob = ops.tanh_gaussian_sample(mean, log_std, key=key, eps=eps)
        return action, log_prob, jnp.tanh(mean)


def make_world_model(obs_dim: int, act_dim: int, **model_cfg) -> WorldModel:
    """Factory: the `model` config slice as keyword arguments."""
    return WorldModel(obs_dim=obs_dim, act_dim=act_dim, **model_cfg)
