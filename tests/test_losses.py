"""World-model loss and update: scan rollout vs a loop, every loss term vs a numpy reference,
termination in TD targets, and the update step (learning, Polyak targets, determinism)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from worldmodel.losses import (
    LossConfig,
    policy_loss,
    rollout_heads,
    to_time_major,
    world_model_loss,
)
from worldmodel.update import OptimConfig, make_train

B, H = 4, 3
# Not the defaults, so that every coefficient and the discount are checked.
CFG = LossConfig(
    rho=0.7,
    consistency_coef=3.0,
    reward_coef=0.5,
    value_coef=0.25,
    continue_coef=2.0,
    encoded_continue_coef=1.5,
    discount=0.9,
)


@pytest.fixture(scope="module")
def setup(tiny):
    model = tiny.model()
    params = tiny.perturb(tiny.init_params(0), seed=1)
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
    """Straightforward loops over steps t, sequences b and heads k; the networks are the model's
    (jitted) parts. Weights rho**t * mask[t, b]; each term is a sum over (t, b) divided by H * B;
    reward/termination/value heads see the rollout of one head per sequence, drawn with the first
    half of `key` (the second half samples the policy action of the TD target)."""
    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    enc, nxt, rew_logits, term_logit = (
        jax.jit(model.encode),
        jax.jit(model.next_all),
        jax.jit(model.reward_logits),
        jax.jit(model.termination_logit),
    )
    q_logits, pi = jax.jit(model.q_logits), jax.jit(model.pi)
    obs, act = batch["obs"], batch["action"]  # time-major numpy
    rew, term, mask = f64(batch["reward"]), f64(batch["terminated"]), f64(batch["mask"])
    n, vmin, vmax, K, Q = model.num_bins, model.vmin, model.vmax, model.num_heads, model.num_q
    key_head, key_td = jax.random.split(key)
    head = np.asarray(jax.random.randint(key_head, (B,), 0, K))
    assert len(set(head.tolist())) > 1  # sequences really use different heads

    next_z = f64(enc(params, obs[1:]))  # (H, B, L)
    z0 = enc(params, obs[0])
    roll = np.zeros((K, H, B, model.latent_dim))  # head k fed on its own predictions
    for k in range(K):
        z = z0
        for t in range(H):
            z = nxt(params, z, act[t])[k]
            roll[k, t] = f64(z)
    zs = np.stack([f64(z0)] + [roll[head, t, np.arange(B)] for t in range(H)])  # (H+1, B, L)
    next_a = f64(pi(params, jnp.asarray(next_z, jnp.float32), key=key_td)[0])

    def term_error(z, t, z_next):  # (B,) BCE of the logit, or the rule dims' squared error
        if model.termination_from == "bounds":
            got = f64(jax.jit(model.bounded_obs)(params, jnp.asarray(z_next, jnp.float32)))
            want = f64(obs[t + 1])[:, [i for i, _, _ in model.rule]]
            return ((got - want) ** 2).sum(-1)
        e_log = f64(term_logit(params, jnp.asarray(z, jnp.float32), act[t], z_next))
        p = 1 / (1 + np.exp(-e_log))
        return -(term[t] * np.log(p) + (1 - term[t]) * np.log(1 - p))

    # termination head on the encoded latents of every step (mask weights, no rho)
    z_obs = [enc(params, obs[t]) for t in range(H + 1)]
    enc_cont = 0.0
    for t in range(H):
        enc_cont += (mask[t] * term_error(z_obs[t], t, z_obs[t + 1])).sum()

    def ce(logits, x):
        return -(_two_hot(np.float64(x), n, vmin, vmax) * _log_softmax(f64(logits))).sum()

    cons = rew_l = cont_l = val_l = 0.0
    td_sum = 0.0
    for t in range(H):
        z32 = jnp.asarray(zs[t], jnp.float32)
        r_log = f64(rew_logits(params, z32, act[t]))
        # termination of the step: from the latent this sequence's head reached, zs[t + 1]
        c_err = term_error(z32, t, jnp.asarray(zs[t + 1], jnp.float32))
        q_log = f64(q_logits(params["q"], z32, act[t]))  # (Q, B, bins)
        q_next = _decode(
            f64(q_logits(target_q, jnp.asarray(next_z[t], jnp.float32), next_a[t])), vmin, vmax
        ).min(0)  # (B,) the pessimistic target critic
        for b in range(B):
            w = cfg.rho**t * mask[t, b]
            cons += w * np.mean([np.mean((roll[k, t, b] - next_z[t, b]) ** 2) for k in range(K)])
            rew_l += w * ce(r_log[b], rew[t, b])
            cont_l += w * c_err[b]
            td = rew[t, b] + cfg.discount * (1 - term[t, b]) * q_next[b]
            td_sum += mask[t, b] * td
            val_l += w * np.mean([ce(q_log[i, b], td) for i in range(Q)])
    # observation heads: Gaussian NLL of symlog(obs') - symlog(obs), mean over heads and dims
    o_mean, o_var = (f64(x) for x in model.obs_moments(params, obs[:-1], act))  # (K, H, B, D)
    sl = lambda x: np.sign(x) * np.log1p(np.abs(x))  # noqa: E731
    o_target = sl(f64(obs[1:])) - sl(f64(obs[:-1]))
    obs_l = 0.0
    for t in range(H):
        for b in range(B):
            nll = 0.5 * (
                (o_target[t, b] - o_mean[:, t, b]) ** 2 / o_var[:, t, b] + np.log(o_var[:, t, b])
            )
            obs_l += mask[t, b] * nll.mean()
    terms = {
        "obs_loss": obs_l / (H * B),
        "consistency_loss": cons / (H * B),
        "reward_loss": rew_l / (H * B),
        "continue_loss": cont_l / (H * B),
        "encoded_continue_loss": enc_cont / (H * B),
        "value_loss": val_l / (H * B),
        "td_target": td_sum / mask.sum(),
    }
    total = (
        cfg.consistency_coef * terms["consistency_loss"]
        + cfg.reward_coef * terms["reward_loss"]
        + cfg.value_coef * terms["value_loss"]
        + cfg.continue_coef * terms["continue_loss"]
        + cfg.encoded_continue_coef * terms["encoded_continue_loss"]
        + cfg.obs_coef * terms["obs_loss"]
    )
    return total, terms


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


RULE = ((0, -0.5, None), (2, -1.0, 1.0))  # a made-up rule on the point mass's obs dims


def _next_termination_setup(tiny, mode="next"):
    """The model with termination_from='next' (its own head on the latent reached) or 'bounds'
    (that head reads the rule's obs dims from the latent reached)."""
    model = dataclasses.replace(tiny.model(), termination_from=mode, termination_bounds=RULE)
    params = tiny.perturb(jax.jit(lambda k: model.init(key=k))(jax.random.key(0)), seed=1)
    assert "term" in params
    return model, params, tiny.perturb(params["q"], seed=2)


@pytest.mark.parametrize("termination_from", ["next", "action", "bounds"])
def test_world_model_loss_matches_reference(setup, tiny, termination_from):
    model, params, target_q = (
        setup if termination_from == "action" else _next_termination_setup(tiny, termination_from)
    )
    assert model.termination_from == termination_from
    cfg = CFG
    batch = to_time_major(tiny.random_batch(7, batch=B, horizon=H))
    batch = jax.tree.map(np.asarray, batch)
    assert 0 < batch["terminated"].sum() < batch["terminated"].size
    assert 0 < batch["mask"].sum() < batch["mask"].size  # padded steps are weighted out
    key = jax.random.key(11)
    total, aux = _loss_fn(model, cfg)(params, target_q, batch, key=key)
    ref_total, ref = _reference_loss(model, cfg, params, target_q, batch, key)
    for name, value in ref.items():
        assert value > 1e-4 or name == "td_target", name  # every term is live
        np.testing.assert_allclose(float(aux[name]), value, rtol=1e-5, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(float(total), ref_total, rtol=1e-5, atol=1e-5)


def test_next_state_termination_sees_only_the_latent_reached(tiny):
    model, params, _ = _next_termination_setup(tiny)
    rng = np.random.default_rng(3)
    z1, z2, zn = (
        jax.nn.softmax(jnp.asarray(rng.normal(size=(B, model.latent_dim)))) for _ in "abc"
    )
    a1, a2 = (jnp.asarray(rng.uniform(-1, 1, (B, model.act_dim)), jnp.float32) for _ in "ab")
    p = model.termination(params, z1, a1, zn)
    np.testing.assert_array_equal(p, model.termination(params, z2, a2, zn))
    assert float(jnp.abs(p - model.termination(params, z1, a1, z2)).max()) > 1e-4


def test_terminated_steps_do_not_bootstrap(setup, tiny):
    model, params, target_q = setup
    loss = _loss_fn(model, CFG)
    key = jax.random.key(5)
    dead = jax.tree.map(
        np.asarray, to_time_major(tiny.random_batch(3, B, H, terminated=1.0, padded=False))
    )
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
    # the targets moved by tau only: a tau fraction of the way to the critics, no further
    assert tau < 0.5
    lt, lq = jax.tree.leaves(old_target)[0], jax.tree.leaves(new_a.params["q"])[0]
    assert (
        np.abs(np.asarray(jax.tree.leaves(new_a.target_q)[0]) - lt).max()
        <= tau * np.abs(np.asarray(lq) - lt).max() * (1 + 1e-4) + 1e-7
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


def test_lambda_returns_by_hand():
    from worldmodel.losses import lambda_returns

    g, lam = 0.9, 0.5
    rew = np.array([[1.0], [2.0], [3.0]])
    q = np.array([[10.0], [20.0], [30.0]])  # target value of the next state of each step
    term = np.zeros((3, 1))
    mask = np.ones((3, 1))
    y2 = 3 + g * 30
    y1 = 2 + g * ((1 - lam) * 20 + lam * y2)
    y0 = 1 + g * ((1 - lam) * 10 + lam * y1)
    got = lambda_returns(rew, term, mask, q, g, lam)
    np.testing.assert_allclose(np.asarray(got)[:, 0], [y0, y1, y2], rtol=1e-6)
    # lam = 0 is one-step TD
    np.testing.assert_allclose(np.asarray(lambda_returns(rew, term, mask, q, g, 0.0)), rew + g * q)
    # step 1 terminal: y1 = r1 and y0 only sees it through lam; step 2 (masked) is ignored
    term1 = np.array([[0.0], [1.0], [0.0]])
    mask1 = np.array([[1.0], [1.0], [0.0]])
    got = np.asarray(lambda_returns(rew * mask1, term1, mask1, q, g, lam))[:, 0]
    np.testing.assert_allclose(got[:2], [1 + g * ((1 - lam) * 10 + lam * 2.0), 2.0], rtol=1e-6)
    # the window ends after step 0 (mask 0 at step 1): bootstrap from q at step 0 only
    mask0 = np.array([[1.0], [0.0], [0.0]])
    got = np.asarray(lambda_returns(rew * mask0, term, mask0, q, g, lam))[0, 0]
    np.testing.assert_allclose(got, 1 + g * 10, rtol=1e-6)


def test_probe_gradients_do_not_scale_the_model_step(tiny):
    """The observation heads are clipped apart: a huge probe gradient (as their NLL gives) leaves
    the world model's update exactly as it is, and is itself cut to `grad_clip`."""
    from worldmodel.update import _model_optimizer, split_params

    optim = OptimConfig(**tiny.sections["optim"])
    tx = _model_optimizer(optim)
    wm, _ = split_params(tiny.init_params(0))
    grads = jax.tree.map(lambda x: jnp.full_like(x, 0.1), wm)  # an ordinary gradient

    def second_step(probe_scale):
        state = tx.init(wm)
        _, state = tx.update(grads, state, wm)  # Adam's moments hold one ordinary step
        g = {**grads, "obs_heads": jax.tree.map(lambda x: probe_scale * x, grads["obs_heads"])}
        updates, _ = tx.update(g, state, wm)
        return updates

    calm, loud = second_step(1.0), second_step(1e4)
    for k in wm:
        if k != "obs_heads":
            for a, b in zip(jax.tree.leaves(calm[k]), jax.tree.leaves(loud[k]), strict=True):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the probe's own step did see the change (it is clipped, not dropped) ...
    assert not all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(
            jax.tree.leaves(calm["obs_heads"]), jax.tree.leaves(loud["obs_heads"]), strict=True
        )
    )
    # ... and is that of Adam on the probe's gradient clipped over the probe's own norm alone
    import optax

    ref = optax.chain(optax.clip_by_global_norm(optim.grad_clip), optax.adam(optim.lr))
    probe, g_probe = wm["obs_heads"], grads["obs_heads"]
    _, ref_state = ref.update(g_probe, ref.init(probe), probe)
    want, _ = ref.update(jax.tree.map(lambda x: 1e4 * x, g_probe), ref_state, probe)
    for a, b in zip(jax.tree.leaves(loud["obs_heads"]), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("bc_coef", [0.0, 2.0])
def test_policy_loss_by_hand(setup, tiny, bc_coef):
    """sum_t rho^t mask_t (entropy_coef log pi - Q/scale) / (T B), plus bc_coef times
    sum_t<T-1 rho^t mask_{t+1} mean_A (mean action - replay action)^2 / (T B); the masked
    steps contribute nothing."""
    model, params, _ = setup
    cfg = dataclasses.replace(CFG, entropy_coef=0.3, bc_coef=bc_coef)
    T, L, A = H + 1, model.latent_dim, model.act_dim
    rng = np.random.default_rng(5)
    zs = jnp.asarray(rng.normal(size=(T, B, L)), jnp.float32)
    mask = np.ones((T, B), np.float32)
    mask[2:, 0] = 0.0  # row 0's episode ends after its first transition
    eps = jnp.asarray(rng.normal(size=(T, B, A)), jnp.float32)
    actions = jnp.asarray(rng.uniform(-1, 1, size=(T - 1, B, A)), jnp.float32)
    loss, aux = policy_loss(
        model, cfg, params["pi"], params, zs, jnp.asarray(mask), 4.0, eps=eps, actions=actions
    )
    a, logp, a_mean = (np.asarray(x) for x in model.pi(params, zs, eps=eps))
    q = np.asarray(model.q_values(params["q"], zs, jnp.asarray(a))).mean(axis=0)
    expect = 0.0
    for t in range(T):
        for b in range(B):
            expect += 0.7**t * mask[t, b] * (0.3 * logp[t, b] - q[t, b] / 4.0)
            if t < T - 1 and mask[t + 1, b]:
                bc = np.mean((a_mean[t, b] - np.asarray(actions)[t, b]) ** 2)
                expect += bc_coef * 0.7**t * bc
    np.testing.assert_allclose(float(loss), expect / (T * B), rtol=1e-5, atol=1e-6)
    assert ("bc" in aux) == (bc_coef > 0)
    if bc_coef:  # a wrong replay action at a masked step changes nothing
        moved = actions.at[2, 0].set(-actions[2, 0])
        again, _ = policy_loss(
            model, cfg, params["pi"], params, zs, jnp.asarray(mask), 4.0, eps=eps, actions=moved
        )
        assert float(again) == float(loss)
