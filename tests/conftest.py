"""Shared test setup: headless MuJoCo, cheap XLA compiles, and the tiny `debug` model/agent.

Every test that builds a model uses the `debug` overlay's sizes (latent 16, hidden 32, 3 heads,
21 bins) and the point mass's dims (obs 3, act 1), so identical computations are compiled once
per session: the persistent compilation cache below lives in a temp dir removed at exit.
"""

import atexit
import os
import shutil
import tempfile
import types

os.environ.setdefault("MUJOCO_GL", "egl")
# Tests are compile-bound (tiny arrays); -O0 halves XLA:CPU compile time.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    _cache_dir = tempfile.mkdtemp(prefix="wm-test-jax-cache-")
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
    jax.config.update("jax_compilation_cache_dir", _cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

OBS_DIM, ACT_DIM = 3, 1  # worldmodel/PointMass-v0


def random_batch(
    seed: int,
    batch: int = 16,
    horizon: int = 3,
    obs_dim: int = OBS_DIM,
    act_dim: int = ACT_DIM,
    terminated: float | None = None,
    padded: bool = True,
) -> dict:
    """Batch-major numpy batch shaped like `Replay.sample`'s: obs (B, H+1, D), action (B, H, A),
    reward, terminated, mask (B, H). padded: some rows end early (mask 0 and zero data after)."""
    rng = np.random.default_rng(seed)
    if terminated is None:
        term = (rng.random((batch, horizon)) < 0.3).astype(np.float32)
    else:
        term = np.full((batch, horizon), terminated, np.float32)
    length = np.where(rng.random(batch) < 0.5, rng.integers(1, horizon + 1, batch), horizon)
    mask = (np.arange(horizon)[None] < length[:, None] if padded else np.ones_like(term)).astype(
        np.float32
    )
    return {
        "obs": rng.normal(size=(batch, horizon + 1, obs_dim)).astype(np.float32),
        "action": rng.uniform(-1, 1, (batch, horizon, act_dim)).astype(np.float32)
        * mask[..., None],
        "reward": rng.uniform(-3, 3, (batch, horizon)).astype(np.float32) * mask,
        "terminated": term * mask,
        "mask": mask,
    }


def perturb(params: dict, seed: int, scale: float = 0.3) -> dict:
    """params + scale * N(0, 1) on every leaf: wakes up the zero-initialised reward/value heads.
    (numpy noise: no per-shape eager XLA compiles.)"""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda x: jnp.asarray(np.asarray(x) + scale * rng.normal(size=x.shape), x.dtype), params
    )


def copy_tree(tree):
    """Fresh buffers (the jitted update donates its state argument)."""
    return jax.tree.map(jnp.copy, tree)


@pytest.fixture(scope="session")
def tiny():
    """Namespace: `sections` (debug config sections), `make_agent(abstain=None, **planner_overrides)` (a fresh
    agent, so fresh jit caches), `model()` (the WorldModel of the debug sizes), `init_params(seed)`
    (its fresh params, one compile per session), and the helpers `random_batch`, `perturb`,
    `copy_tree`, `OBS_DIM`, `ACT_DIM`."""
    from agents.agent import make_agent
    from worldmodel.config import load_config
    from worldmodel.model import make_world_model

    cfg = load_config(["debug"])
    sections = {n: cfg.section(n) for n in ("model", "loss", "optim", "planner", "train")}

    def agent(abstain=None, **planner):
        s = sections
        return make_agent(
            OBS_DIM,
            ACT_DIM,
            model=s["model"],
            loss=s["loss"],
            optim=s["optim"],
            planner={**s["planner"], **planner},
            abstain=abstain,
        )

    model = make_world_model(OBS_DIM, ACT_DIM, **sections["model"])
    init = jax.jit(lambda key: model.init(key=key))

    return types.SimpleNamespace(
        sections=sections,
        make_agent=agent,
        model=lambda: model,
        init_params=lambda seed: init(jax.random.key(seed)),
        random_batch=random_batch,
        perturb=perturb,
        copy_tree=copy_tree,
        OBS_DIM=OBS_DIM,
        ACT_DIM=ACT_DIM,
    )
