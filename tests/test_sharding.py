"""Sharded update == one-device update (float tolerance), run in a subprocess with 4 virtual
CPU devices: data-parallel (4 x 1) and data x model (2 x 2, ensemble heads split)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import jax, numpy as np
from agents.agent import make_agent
from worldmodel.config import load_config
from worldmodel.sharding import make_mesh, make_sharded_update, place_batch, place_state
from tests.conftest import random_batch

assert len(jax.devices()) == 4, jax.devices()
cfg = load_config(["debug", "loss.bc_coef=0.5"])  # the behaviour-cloning term too
s = {n: cfg.section(n) for n in ("model", "loss", "optim", "planner", "abstain")}
agent = make_agent(3, 1, **s)
batches = [random_batch(i, batch=16) for i in range(3)]

def run(mesh=None, shard_ensemble=False):
    state = agent.init(key=jax.random.key(0))
    update = agent.update
    if mesh is not None:  # data-parallel gradients, one packed all-reduce per gradient step
        sharded = make_agent(3, 1, **s, mesh=mesh)
        state = place_state(state, mesh, shard_ensemble=shard_ensemble)
        update = make_sharded_update(sharded.update, mesh)
    for i, b in enumerate(batches):
        state, metrics = update(state, b, key=jax.random.key(i))
    return jax.device_get(state.params), float(metrics["loss"])

ref, ref_loss = run()
# the packed path: one flat all-reduce per gradient step, not one per parameter leaf
import re
mesh = make_mesh(data=4, model=1)
packed = make_agent(3, 1, **s, mesh=mesh)
state = place_state(packed.init(key=jax.random.key(0)), mesh)
hlo = packed.update.lower(state, place_batch(batches[0], mesh), key=jax.random.key(0))
ops = re.findall(r"\b(all-reduce|all-gather)(?:-start)?\(", hlo.compile().as_text())
print("collectives:", ops)
assert ops == ["all-reduce", "all-reduce"], ops
for data, model, split in ((4, 1, False), (2, 2, True)):
    params, loss = run(make_mesh(data=data, model=model), split)
    diff = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), ref, params)))
    print(f"mesh {data}x{model}: loss {loss:.7f} vs {ref_loss:.7f}, max param diff {diff:.2e}")
    assert abs(loss - ref_loss) < 1e-4 and diff < 1e-4, (data, model, diff)
print("OK")
"""


def test_sharded_update_matches_one_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0"
    env.pop("JAX_PLATFORMS", None)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr[-3000:]
