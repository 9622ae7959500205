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


def stream_report(agent, params, calib: Calibration, stream: dict, *, kind, window) -> dict:
    """How the model (params, calib) sees `stream` (obs, action, next_obs (T, ...), first (T,),
    time ordered), from one scoring pass: 'abstain', the share of its decisions on which the gate
    would abstain (decision score > threshold, as `agents.abstain` decides online; NaN for an
    uncalibrated gate), and the mean normalised one-step 'surprise' and 'epistemic' scores
    (about 1 on the model's own training data; kept to tell which of them separates the world
    from the policy that acted in it, which the gate's rate does not: BENCHMARKS.md). All NaN
    for an empty stream."""
    if not len(stream["obs"]):
        return {"abstain": math.nan, "surprise": math.nan, "epistemic": math.nan}
    scores = score_transitions(
        agent, params, calib, stream["obs"], stream["action"], stream["next_obs"]
    )
    threshold = float(calib.threshold)
    abstain = math.nan
    if math.isfinite(threshold):
        first = np.asarray(stream["first"], bool)
        d = decision_scores(scores, first, kind=kind, window=window, calib=calib)
        abstain = float(np.mean(d > threshold))
    means = {k: float(np.mean(scores[k])) for k in ("surprise", "epistemic")}
    return {"abstain": abstain, **means}


def recognise(agent, worlds: list[World], current: int, stream: dict, *, kind: str,
              window: int, level: float) -> tuple[int | None, dict]:  # fmt: skip
    """(index of the stored world other than `current` whose own gate abstains least on
    `stream`, if that rate is <= `level`, else None; the report: per world (in order) 'rates'
    (the gate's abstain share, None for `current` and for an uncalibrated gate), 'surprise' and
    'epistemic' means (`stream_report`, every world, `current` included))."""
    report: dict[str, list] = {"rates": [], "surprise": [], "epistemic": []}
    for j, w in enumerate(worlds):
        r = stream_report(agent, w.state.params, w.calib, stream, kind=kind, window=window)
        rate = r["abstain"] if j != current and math.isfinite(r["abstain"]) else None
        report["rates"].append(rate)
        for k in ("surprise", "epistemic"):
            report[k].append(r[k] if math.isfinite(r[k]) else None)
    known = [(r, j) for j, r in enumerate(report["rates"]) if r is not None and r <= level]
    return (min(known)[1] if known else None), report


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
        known, report = recognise(
            agent, self.worlds, self.current, stream, kind=kind, window=window, level=level
        )
        record = {"step": step, "recalled": known, "from": self.current,
                  "transitions": len(stream["obs"]), **report}  # fmt: skip
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
