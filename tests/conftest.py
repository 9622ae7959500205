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
) -> dict:
    """Batch-major numpy batch as `Replay.sample` returns it."""
    rng = np.random.default_rng(seed)
    term = (
        (rng.random((batch, horizon)) < 0.3)
        if terminated is None
        else np.full((batch, horizon), terminated)
    )
    return {
        "obs": rng.normal(size=(batch, horizon + 1, obs_dim)).astype(np.float32),
        "action": rng.uniform(-1, 1, (batch, horizon, act_dim)).astype(np.float32),
        "reward": rng.uniform(-3, 3, (batch, horizon)).astype(np.float32),
        "terminated": term.astype(np.float32),
    }


def perturb(params: dict, seed: int, scale: float = 0.3) -> dict:
    """params + scale * N(0, 1) on every leaf: wakes up the zero-initialised reward/value heads."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        treedef,
        [
            x + scale * jax.random.normal(k, x.shape, x.dtype)
            for x, k in zip(leaves, keys, strict=True)
        ],
    )


def copy_tree(tree):
    """Fresh buffers (the jitted update donates its state argument)."""
    return jax.tree.map(jnp.copy, tree)


@pytest.fixture(scope="session")
def tiny():
    """Namespace: `sections` (debug config sections), `make_agent(**planner_overrides)` (a fresh
    agent, so fresh jit caches), `model()` (a WorldModel of the debug sizes), and the helpers
    `random_batch`, `perturb`, `copy_tree`, `OBS_DIM`, `ACT_DIM`."""
    from agents.agent import make_agent
    from worldmodel.config import load_config
    from worldmodel.model import make_world_model

    cfg = load_config(["debug"])
    sections = {n: cfg.section(n) for n in ("model", "loss", "optim", "planner", "train")}

    def agent(**planner):
        s = sections
        return make_agent(
            OBS_DIM,
            ACT_DIM,
            model=s["model"],
            loss=s["loss"],
            optim=s["optim"],
            planner={**s["planner"], **planner},
        )

    return types.SimpleNamespace(
        sections=sections,
        make_agent=agent,
        model=lambda: make_world_model(OBS_DIM, ACT_DIM, **sections["model"]),
        random_batch=random_batch,
        perturb=perturb,
        copy_tree=copy_tree,
        OBS_DIM=OBS_DIM,
        ACT_DIM=ACT_DIM,
    )
