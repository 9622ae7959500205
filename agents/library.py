"""A library of per-world models: learning on the job without forgetting (continual mode 'library').

Each world the change detector has told apart keeps its own model (the whole TrainState:
parameters, target critics, optimiser), its calibrated gate and the change detector's reference
scores. At a confirmed change, every other stored world's own gate is asked about the
transitions lived through since the change was detected: a world whose gate abstains on at most
`known_level` of those decisions is that world come back, and its model is deployed as it was
left (nothing to relearn, nothing forgotten). Otherwise the change is a new world: a copy of the
current model is fine-tuned on the new world's data alone (once the share has ramped up), so one
model never has to fit the average of two dynamics, and is recalibrated there; it is stored as
it stands at the next change. The idea is that of model libraries for non-stationary dynamics
(e.g. MOLe, Nagabandi et al. 2019, "Deep online learning via meta-learning"): expand when the
data is unlikely under every known model, recall when it is likely under one.

Costs: one model per world in memory (a few MB each here), and a known world's model returns
only at a confirmed alarm (the detector's delay plus its confirmation, about two episodes).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from agents.abstain import decision_scores
from agents.calibration import score_transitions
from worldmodel.uncertainty import Calibration

MIN_STREAM = 100  # transitions a recognition looks at, at least (a late-confirmed detection)


@dataclasses.dataclass(frozen=True)
class World:
    """One stored world: its model `state` (TrainState), gate `calib`, the change detector's
    `reference` ((scores, episodes, terminated), as `ChangeDetector.reset` takes them) and the
    `name` of the schedule world it was created in (for the report only: the agent never
    reads it)."""

    state: Any
    calib: Calibration
    reference: tuple
    name: str


def gate_abstain_rate(agent, params, calib: Calibration, stream: dict, *, kind, window) -> float:
    """Share of the decisions of `stream` (obs, action, next_obs (T, ...), first (T,), time
    ordered) on which the gate of (params, calib) would abstain: decision score > threshold, as
    `agents.abstain` decides online. NaN for an empty stream or an uncalibrated gate."""
    threshold = float(calib.threshold)
    if not len(stream["obs"]) or not math.isfinite(threshold):
        return math.nan
    scores = score_transitions(
        agent, params, calib, stream["obs"], stream["action"], stream["next_obs"]
    )
    first = np.asarray(stream["first"], bool)
    d = decision_scores(scores, first, kind=kind, window=window, calib=calib)
    return float(np.mean(d > threshold))


def recognise(agent, worlds: list[World], current: int, stream: dict, *, kind: str,
              window: int, level: float) -> tuple[int | None, list[float]]:  # fmt: skip
    """(index of the stored world other than `current` whose own gate abstains least on
    `stream`, if that rate is <= `level`, else None; every world's rate, None for `current` and
    for a world whose gate is not calibrated)."""
    rates: list[float | None] = []
    for j, w in enumerate(worlds):
        r = math.nan
        if j != current:
            r = gate_abstain_rate(agent, w.state.params, w.calib, stream, kind=kind, window=window)
        rates.append(r if math.isfinite(r) else None)
    known = [(r, j) for j, r in enumerate(rates) if r is not None and r <= level]
    return (min(known)[1] if known else None), rates


def score_means(agent, worlds: list[World], stream: dict) -> dict:
    """Diagnostics of a recognition, for every stored world (the current one included): the
    stream's mean normalised one-step 'surprise' and 'epistemic' scores under each world's model
    and normalisers (about 1 on its own training data). Kept to tell which of them separates
    the world from the policy that acted in it (the gate's rate does not: BENCHMARKS.md)."""
    out: dict[str, list[float | None]] = {"surprise": [], "epistemic": []}
    for w in worlds:
        scores = score_transitions(
            agent, w.state.params, w.calib, stream["obs"], stream["action"], stream["next_obs"]
        )
        for k in out:
            out[k].append(float(np.mean(scores[k])) if len(stream["obs"]) else None)
    return out


def _copy(tree):
    """Fresh buffers: the jitted update donates the state it is given, a stored one must survive."""
    return jax.tree.map(jnp.copy, tree)


class Library:
    """The stored worlds (`worlds`, World) and the index of the one deployed (`current`)."""

    def __init__(self, state, calib: Calibration, reference: tuple, name: str):
        self.worlds = [World(_copy(state), calib, reference, name)]
        self.current = 0

    def on_alarm(self, agent, state, calib: Calibration, reference: tuple, stream: dict, *,
                 kind: str, window: int, level: float, name: str, step: int):  # fmt: skip
        """A confirmed change while (state, calib, reference) is deployed: store it as the
        current world, then recall the stored world `recognise` finds for `stream` (returned,
        with its own copy of the state, to deploy) or start a new world named `name` (None
        returned: keep `state` and learn). Also returns the record of the decision."""
        w = self.worlds[self.current]
        self.worlds[self.current] = World(_copy(state), calib, reference, w.name)
        known, rates = recognise(
            agent, self.worlds, self.current, stream, kind=kind, window=window, level=level
        )
        record = {"step": step, "rates": rates, "recalled": known, "from": self.current,
                  "transitions": len(stream["obs"]),
                  **score_means(agent, self.worlds, stream)}  # fmt: skip
        if known is None:  # its state is stored at its own next change
            self.worlds.append(World(None, calib, reference, name))
            self.current = len(self.worlds) - 1
            return None, record
        self.current = known
        w = self.worlds[known]
        return dataclasses.replace(w, state=_copy(w.state)), record

    def original(self, state):
        """The model state that acts in the first world: `state` while it is deployed."""
        return state if self.current == 0 else self.worlds[0].state
