"""Flax modules of the world model: MLP blocks and a vmapped ensemble wrapper.

Every hidden layer is Dense -> LayerNorm -> SiLU. TD-MPC2 uses Mish; on CPU Mish's three
transcendentals cost 5x SiLU's one (measured: 2.8 vs 0.56 ms on 2M activations) for no known gain.
LayerNorm keeps the latent consistency loss well conditioned without per-task tuning.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from worldmodel import ops


class MLP(nn.Module):
    """(..., in) -> (..., out). Hidden layers Dense+LayerNorm+SiLU; `zero_init` zeroes the last layer
    (reward and value heads start by predicting 0); `simnorm_group` > 0 applies SimNorm to the output.
    `layer_norm=False` drops LayerNorm: it makes a layer blind to its input's scale, which is
    what an ensemble needs to see to disagree far from its data (the observation heads)."""

    hidden: Sequence[int]
    out: int
    zero_init: bool = False
    simnorm_group: int = 0
    layer_norm: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = nn.Dense(width)(x)
            x = jax.nn.silu(nn.LayerNorm()(x) if self.layer_norm else x)
        init = nn.initializers.zeros if self.zero_init else nn.initializers.lecun_normal()
        x = nn.Dense(self.out, kernel_init=init)(x)
        if self.simnorm_group:
            x = ops.simnorm(x, self.simnorm_group)
        return x


class StateActionMLP(nn.Module):
    """MLP on concat(z, a): (..., L), (..., A) -> (..., out)."""

    hidden: Sequence[int]
    out: int
    zero_init: bool = False
    simnorm_group: int = 0
    layer_norm: bool = True

    @nn.compact
    def __call__(self, z: jax.Array, a: jax.Array) -> jax.Array:
        return MLP(self.hidden, self.out, self.zero_init, self.simnorm_group, self.layer_norm)(
            jnp.concatenate([z, a], axis=-1)
        )


def ensemble(module_cls: type[nn.Module], size: int, **kwargs) -> nn.Module:
    """K independent copies of `module_cls` with stacked params (leading axis K).

    Inputs carry a leading K axis (broadcast them first when all members see the same input),
    outputs have a leading K axis. Members are initialised from different keys, which is what
    makes their disagreement meaningful outside the data.
    """
    vmapped = nn.vmap(
        module_cls,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=0,
        out_axes=0,
        axis_size=size,
    )
    return vmapped(**kwargs)
