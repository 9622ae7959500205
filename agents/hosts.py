"""This process's share of a multi-host run (host): its streams, env seed, batch rows and mesh size.

Every process of a jax.distributed run has its own envs and replay and steps in lockstep (the
same env steps per iteration, hence the same updates); they differ in what they draw. With one
process every method is the identity of the single-host trainer (same streams, seeds, batch),
so a single-process run is bit-identical to one without this module.
"""

from __future__ import annotations

import dataclasses

import jax

from worldmodel.distributed import any_process
from worldmodel.errors import ConfigError
from worldmodel.rng import host_stream, np_rng


@dataclasses.dataclass(frozen=True)
class Host:
    """This process: `index` of `count` (jax.process_index / process_count)."""

    index: int = 0
    count: int = 1

    @classmethod
    def current(cls) -> Host:
        return cls(jax.process_index(), jax.process_count())

    @property
    def main(self) -> bool:
        """Process 0: the one that evaluates (and whose records the scripts keep)."""
        return self.index == 0

    def stream(self, name: str) -> str:
        """Randomness stream `name` of this process (worldmodel.rng.host_stream)."""
        return host_stream(name, self.index)

    def env_seed(self, seed: int) -> int:
        """Seed of this process's training envs: `seed` on process 0, a derived one elsewhere."""
        if self.index == 0:
            return seed
        return int(np_rng(seed, "env_seed", self.index).integers(2**31))

    def mesh_data(self, data: int) -> int:
        """Size of the data axis: `mesh.data` counts the devices of all processes; below the
        process count (e.g. the default 1) it is raised to it, one device per process."""
        return max(data, self.count)

    def local_batch(self, batch_size: int) -> int:
        """Rows of the global `train.batch_size` this process samples from its own replay."""
        if batch_size % self.count:
            raise ConfigError(
                f"train.batch_size={batch_size} (the global batch) must be divisible by the "
                f"number of processes ({self.count})"
            )
        return batch_size // self.count

    def any(self, flag: bool) -> bool:
        """True on every process when `flag` is on any (a collective when count > 1)."""
        return any_process(flag) if self.count > 1 else bool(flag)
