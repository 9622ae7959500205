"""World-model loss and update: scan rollout vs a loop, every loss term vs a numpy reference,
termination in TD targets, and the update step (learning, Polyak targets, determinism)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from worldmodel.losses import LossConfig, rollout_heads, to_time_major, world_model_loss
from worldmodel.update import OptimConfig, make_train

B, H = 4, 3


@pytest.fixture(scope="module")
def setup(tiny):
    model = tiny.model()
    params = tiny.perturb(jax.jit(lambda k: model.init(key=k))(jax.random.key(0)), seed=1)
    target_q = tiny.perturb(params["q"], seed=2)
    return model, params, target_q


# ------------------------------------------------------------------------ numpy reference
def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _softmax(x):
    return np.exp(_log_softmax(x))


def _two_hot(x, n, vmin, vmax):
    y = np.clip(np.sign(x) * np.log1p(np.abs(x)), vmin, vmax)
    pos = (y - vmin) / ((vmax - vmin) / (n - 1))
    lo = np.clip(np.floor(pos), 0, n - 2).astype(int)
    frac = pos - lo
    out = np.zeros((*np.shape(x), n))
    np.put_along_axis(out, lo[..., None], (1 - frac)[..., None], -1)
    np.put_along_axis(out, lo[..., None] + 1, frac[..., None], -1)
    return out


def _decode(logits, vmin, vmax):
    y = (_softmax(logits) * np.linspace(vmin, vmax, logits.shape[-1])).sum(-1)
    return np.sign(y) * np.expm1(np.abs(y))


def _reference_loss(model, cfg, params, target_q, batch, key):
    """Straightforward per-step / per-head loops; the networks are the model's (jitted) parts."""
    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    enc = jax.jit(model.encode)
    nxt = jax.jit(model.next_all)
    rew_logits = jax.jit(model.reward_logits)
    q_logits = jax.jit(model.q_logits)
    pi = jax.jit(model.pi)
    obs, act = batch["obs"], batch["action"]  # time-major numpy
    rew, term = f64(batch["reward"]), f64(batch["terminated"])
    n, vmin, vmax, K = model.num_bins, model.vmin, model.vmax, model.num_heads
    ce = lambda logits, x: -(_two_hot(x, n, vmin, vmax) * _log_softmax(f64(logits))).sum(-1)  # noqa: E731

    next_z = [f64(enc(params, obs[t + 1])) for t in range(H)]
    z0 = enc(params, obs[0])
    heads = []  # heads[k][t] = head k's latent after t+1 steps, fed on its own predictions
    for k in range(K):
        z, traj = z0, []
        for t in range(H):
            z = nxt(params, z, act[t])[k]
            traj.append(z)
        heads.append(traj)
    consistency = (
        sum(
            cfg.rho**t * np.mean([np.mean((f64(heads[k][t]) - next_z[t]) ** 2) for k in range(K)])
            for t in range(H)
        )
        / H
    )

    zs = [z0] + [jnp.mean(jnp.stack([heads[k][t] for k in range(K)]), 0) for t in range(H)]
    reward_loss = continue_loss = value_loss = 0.0
    eps_key = key
    next_a = pi(params, jnp.stack([jnp.asarray(z, jnp.float32) for z in next_z]), key=eps_key)[0]
    td_all = []
    for t in range(H):
        r_log, c_log = rew_logits(params, zs[t], act[t])
        reward_loss += cfg.rho**t * ce(r_log, rew[t]).mean() / H
        c = f64(c_log)
        bce = -(
            term[t] * np.log(1 / (1 + np.exp(-c))) + (1 - term[t]) * np.log(1 / (1 + np.exp(c)))
        )
        continue_loss += cfg.rho**t * bce.mean() / H
        q_next = _decode(
            f64(q_logits(target_q, jnp.asarray(next_z[t], jnp.float32), next_a[t])), vmin, vmax
        ).min(0)
        td = rew[t] + cfg.discount * (1 - term[t]) * q_next
        td_all.append(td)
        q_log = f64(q_logits(params["q"], zs[t], act[t]))  # (Q, B, bins)
        value_loss += (
            cfg.rho**t * np.mean([ce(q_log[i], td).mean() for i in range(model.num_q)]) / H
        )
    total = (
        cfg.consistency_coef * consistency
        + cfg.reward_coef * reward_loss
        + cfg.value_coef * value_loss
        + cfg.continue_coef * continue_loss
    )
    return total, {
        "consistency_loss": consistency,
        "reward_loss": reward_loss,
        "continue_loss": continue_loss,
        "value_loss": value_loss,
        "td_target": np.mean(td_all),
    }


def _loss_fn(model, cfg):
    return jax.jit(functools.partial(world_model_loss, model, cfg))


# ------------------------------------------------------------------------ tests
def test_rollout_heads_scan_equals_python_loop(setup):
    model, params, _ = setup
    rng = np.random.default_rng(0)
    z0 = jax.nn.softmax(jnp.asarray(rng.normal(size=(B, model.latent_dim)), jnp.float32))
    actions = jnp.asarray(rng.uniform(-1, 1, (H, B, model.act_dim)), jnp.float32)
    got = jax.jit(functools.partial(rollout_heads, model))(params, z0, actions)
    assert got.shape == (H, model.num_heads, B, model.latent_dim)
    step = jax.jit(model.next_split)
    zk = jnp.broadcast_to(z0, (model.num_heads, *z0.shape))
    for t in range(H):
        zk = step(params, zk, jnp.broadcast_to(actions[t], (model.num_heads, *actions[t].shape)))
        np.testing.assert_allclose(got[t], zk, rtol=1e-5, atol=1e-6)
    # heads really differ, so mixing them up would be caught
    assert float(jnp.abs(got[-1, 0] - got[-1, 1]).max()) > 1e-3


def test_world_model_loss_matches_reference(setup, tiny):
    model, params, target_q = setup
    cfg = LossConfig(
        rho=0.7,
        consistency_coef=3.0,
        reward_coef=0.5,
        value_coef=0.25,
        continue_coef=2.0,
        discount=0.9,
    )
    batch = to_time_major(tiny.random_batch(7, batch=B, horizon=H))
    batch = jax.tree.map(np.asarray, batch)
    assert 0 < batch["terminated"].sum() < batch["terminated"].size
    key = jax.random.key(11)
    total, aux = _loss_fn(model, cfg)(params, target_q, batch, key=key)
    ref_total, ref = _reference_loss(model, cfg, params, target_q, batch, key)
    for name, value in ref.items():
        assert value > 1e-4 or name == "td_target", name  # every term is live
        np.testing.assert_allclose(float(aux[name]), value, rtol=1e-5, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(float(total), ref_total, rtol=1e-5, atol=1e-5)


def test_terminated_steps_do_not_bootstrap(setup, tiny):
    model, params, target_q = setup
    loss = _loss_fn(model, LossConfig())
    key = jax.random.key(5)
    dead = jax.tree.map(np.asarray, to_time_major(tiny.random_batch(3, B, H, terminated=1.0)))
    alive = {**dead, "terminated": np.zeros_like(dead["terminated"])}
    _, aux_dead = loss(params, target_q, dead, key=key)
    _, aux_alive = loss(params, target_q, alive, key=key)
    assert float(aux_dead["td_target"]) == pytest.approx(float(dead["reward"].mean()), abs=1e-6)
    assert abs(float(aux_alive["td_target"]) - float(dead["reward"].mean())) > 1e-2


@pytest.fixture(scope="module")
def train_fns(tiny):
    model = tiny.model()
    optim = OptimConfig(**tiny.sections["optim"])
    init, update = make_train(model, LossConfig(**tiny.sections["loss"]), optim)
    return init, update, optim


def test_update_learns_a_fixed_batch(train_fns, tiny):
    init, update, _ = train_fns
    state = init(key=jax.random.key(0))
    batch = tiny.random_batch(1)
    losses = []
    for i in range(30):
        state, metrics = update(state, batch, key=jax.random.key(i))
        losses.append(float(metrics["loss"]))
    assert np.isfinite(losses).all()
    assert int(state.step) == 30
    assert losses[-1] < 0.95 * losses[0], losses
    assert np.mean(np.diff(losses) < 0) > 0.9, losses  # steadily, not by luck


def test_update_polyak_targets_and_determinism(train_fns, tiny):
    init, update, optim = train_fns
    state = init(key=jax.random.key(1))
    state = state.replace(target_q=tiny.perturb(state.target_q, seed=3))  # != online critics
    state, _ = update(state, tiny.random_batch(2), key=jax.random.key(0))  # Adam past step 0
    batch, key = tiny.random_batch(4), jax.random.key(9)
    old_target = jax.tree.map(np.asarray, state.target_q)
    old_q = jax.tree.map(np.asarray, state.params["q"])
    new_a, metrics_a = update(tiny.copy_tree(state), batch, key=key)
    new_b, metrics_b = update(tiny.copy_tree(state), batch, key=key)

    tau = optim.tau
    for old_t, old_online, new_q, new_t in zip(
        jax.tree.leaves(old_target),
        jax.tree.leaves(old_q),
        jax.tree.leaves(new_a.params["q"]),
        jax.tree.leaves(new_a.target_q),
        strict=True,
    ):
        np.testing.assert_allclose(
            new_t, (1 - tau) * old_t + tau * np.asarray(new_q), rtol=1e-6, atol=1e-7
        )
        assert not np.allclose(new_q, old_online)  # the critics did move
    # the targets moved by tau only: far closer to the old targets than to the critics
    lt, lq = jax.tree.leaves(old_target)[0], jax.tree.leaves(new_a.params["q"])[0]
    assert (
        np.abs(np.asarray(jax.tree.leaves(new_a.target_q)[0]) - lt).max()
        < 0.05 * np.abs(np.asarray(lq) - lt).max()
    )

    for x, y in zip(
        jax.tree.leaves((new_a, metrics_a)), jax.tree.leaves((new_b, metrics_b)), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    other, _ = update(tiny.copy_tree(state), batch, key=jax.random.key(10))
    assert not np.array_equal(
        np.asarray(other.params["pi"]["Dense_2"]["kernel"]),
        np.asarray(new_a.params["pi"]["Dense_2"]["kernel"]),
    )
