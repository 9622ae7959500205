"""A library of per-world models: learning on the job without forgetting (continual mode 'library').

Each world the change detector has told apart keeps its own model (the whole TrainState:
parameters, target critics, optimiser), its calibrated gate and the change detector's reference
scores. At a confirmed change, every other stored world's own gate is asked about the
transitions lived through since the change was detected: a world whose gate abstains on at most
`known_level` of those decisions is that world come back, and its model is deployed as it was
left (nothing to relearn, nothing forgotten). Those transitions were acted by the world left's
policy, which may lead any other world's model off its data even in its own world, so when no
gate accepts them each stored world is probed: it acts for a few episodes and is recalled if
its gate accepts what its own policy meets (`Library.probe_step`, `probe_verdict`). Otherwise
the change is a new world: a copy of the model that returned most in it (the one deployed at
the alarm, or a probed one) is fine-tuned on the new world's data alone (once the share has
ramped up), so one model never has to fit the average of two dynamics, and is recalibrated
there; it is stored as it stands at the next change. The idea is that of model libraries for
non-stationary dynamics (e.g. MOLe, Nagabandi et al. 2019, "Deep online learning via
meta-learning"): expand when the data is unlikely under every known model, recall when it is
likely under one.

Costs: one model per world in memory (a few MB each here), a known world's model returns only
at a confirmed alarm (the detector's delay plus its confirmation, about two episodes), and a
probe acts with a model that may be wrong for the world for one handover episode plus
`probe_steps` (no learning meanwhile).
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
    `reference` ((scores, episodes, terminated), as `ChangeDetector.reset` takes them), the
    `name` of the schedule world it was created in (for the report only: the agent never
    reads it) and the return `level` its model reached there (what `Library.copes` weighs a
    new world's returns against)."""

    state: Any
    calib: Calibration
    reference: tuple
    name: str
    level: float = math.nan  # median return of the episodes it was calibrated on (NaN: unknown)


def stream_report(agent, params, calib: Calibration, stream: dict, *, kind, window) -> dict:
    """How the model (params, calib) sees `stream` (obs, action, next_obs (T, ...), first (T,),
    time ordered), from one scoring pass: 'abstain', the share of its decisions on which the gate
    would abstain (decision score > threshold, as `agents.abstain` decides online; NaN for an
    uncalibrated gate), the mean normalised one-step 'surprise' and 'epistemic' scores
    (about 1 on the model's own training data), and 'error': the observation heads' mean
    squared error on the stream, per dimension over the stream's own variance of the target,
    floored at 1% of its mean, averaged over dimensions (1 - R^2: 0 for a perfect model, 1 for
    one that predicts the mean; the same scale for every model asked about the same stream).
    All NaN for an empty stream."""
    if not len(stream["obs"]):
        return {k: math.nan for k in ("abstain", "surprise", "epistemic", "error")}
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
    return {"abstain": abstain, **means, "error": normalised_error(scores)}


def normalised_error(scores: dict) -> float:
    """1 - R^2 of the observation heads' prediction on the scored stream (`stream_report`)."""
    var = scores["obs_target"].var(axis=0)
    var = np.maximum(var, 0.01 * var.mean() + 1e-8)  # a near-constant dimension divides by ~0
    return float(np.mean((scores["obs_error"] ** 2).mean(axis=0) / var))


def recognise(agent, worlds: list[World], current: int, stream: dict, *, kind: str,
              window: int, level: float) -> tuple[int | None, dict]:  # fmt: skip
    """(index of the stored world other than `current` whose own gate abstains least on
    `stream`, if that rate is <= `level`, else None; the report: per world (in order) 'rates'
    (the gate's abstain share, None for `current` and for an uncalibrated gate), 'surprise',
    'epistemic' and 'error' (`stream_report`, every world, `current` included))."""
    report: dict[str, list] = {"rates": [], "surprise": [], "epistemic": [], "error": []}
    for j, w in enumerate(worlds):
        r = stream_report(agent, w.state.params, w.calib, stream, kind=kind, window=window)
        rate = r["abstain"] if j != current and math.isfinite(r["abstain"]) else None
        report["rates"].append(rate)
        for k in ("surprise", "epistemic", "error"):
            report[k].append(r[k] if math.isfinite(r[k]) else None)
    known = [(r, j) for j, r in enumerate(report["rates"]) if r is not None and r <= level]
    return (min(known)[1] if known else None), report


def probe_verdict(rate: float, world: World, *, level: float, alpha: float):
    """(whether a probe's abstain share `rate` says the probed `world` is back, its p-value):
    recalled if `rate` <= `level`, or if the conformal p-value of `rate` among the abstain
    shares of the world's own reference episodes (the held-out greedy episodes its gate and
    change detector were set on), p = (1 + #{episode shares >= rate}) / (N + 1), exceeds
    `alpha`: the probe is then as typical of that world as all but alpha of its own episodes
    (an episode's share is heavy-tailed: most near 0, a few high, e.g. 0.23 over the last three
    episodes of Hopper's unchanged first phase). A probe spanning several episodes is compared
    with single episodes (its mean varies less than one's: accepting is then easier). p is NaN
    without reference episodes; with fewer than 1 / alpha - 1 of them (no p can be <= alpha)
    only `level` decides."""
    episodes = world.reference[1] if len(world.reference) > 1 and world.reference[1] else []
    threshold = float(world.calib.threshold)
    shares = np.array([np.mean(np.asarray(e) > threshold) for e in episodes if len(e)])
    pvalue = (1 + np.sum(shares >= rate)) / (len(shares) + 1) if len(shares) else math.nan
    # with fewer than 1 / alpha - 1 episodes no p-value is <= alpha: the test could never
    # refuse, so `level` alone decides (else every probe recalls: HalfCheetah with 10 reference
    # episodes alternated between two wrong stored worlds for 15000 steps, continual_v12)
    can_refuse = len(shares) > 0 and 1 / (len(shares) + 1) <= alpha
    return bool(rate <= level or (can_refuse and pvalue > alpha)), float(pvalue)


def _copy(tree):
    """Fresh buffers: the jitted update donates the state it is given, a stored one must survive."""
    return jax.tree.map(jnp.copy, tree)


class Library:
    """The stored worlds (`worlds`, World), the index of the one deployed (`current`) and, while
    a stored world is being tried out, the `probe` (else None).

    A confirmed alarm is answered in one of three ways (`on_alarm`): a stored world whose own
    gate accepts the data since the detection is recalled at once; else, with `probe_steps` > 0,
    each stored world with a calibrated gate is *probed*: deployed as it was left, it acts from
    the next episode start for at least `probe_steps` transitions (whole episodes), and is
    recalled if its gate's abstain share on them is typical of its own world (`probe_verdict`);
    else a new world. The probe is what separates the world from the policy: a gate is
    calibrated on its own model's greedy episodes in its own world, while data acted by another
    world's policy may lie off its data even in its own world (Hopper, back in the original
    world acted by the gain world's policy: 99.2% abstained)."""

    def __init__(self, state, calib: Calibration, reference: tuple, name: str):
        self.worlds = [World(_copy(state), calib, reference, name)]
        self.current = 0
        self.probe: dict | None = None
        self.review: dict | None = None
        self.forked_from: int | None = None  # the stored world the new world's model came from
        self.record: dict | None = None  # the latest alarm's record

    def on_alarm(self, agent, state, calib: Calibration, reference: tuple, stream: dict, *,
                 kind: str, window: int, level: float, name: str, step: int,
                 probe_steps: int = 0, returns=(), before=()):  # fmt: skip
        """A confirmed change while (state, calib, reference) is deployed: store it as the
        current world, then (action, World | None, record): ('recall', the stored world
        `recognise` finds for `stream`, with its own copy of the state, to deploy), ('probe',
        the first stored world to try out: deploy it, no learning, and call `probe_step` after
        each env step from here) or ('new', None: keep `state` and learn; a new world named
        `name` is listed, its state stored at its own next change). `returns`: those of the
        episodes the deployed model finished since the detection (its showing in the new world,
        weighed against the probed worlds' if none is recalled); `before`: those of its
        episodes before the detection, the median of which is its return level in the world
        left if that is not known yet (`set_level`)."""
        w = self.worlds[self.current]
        own = w.level if math.isfinite(w.level) or not len(before) else float(np.median(before))
        self.worlds[self.current] = World(_copy(state), calib, reference, w.name, own)
        known, report = recognise(
            agent, self.worlds, self.current, stream, kind=kind, window=window, level=level
        )
        record = {"step": step, "recalled": known, "from": self.current,
                  "transitions": len(stream["obs"]), **report, "probes": []}  # fmt: skip
        record["answer"] = "recall" if known is not None else "new"  # or 'probe' while it lasts
        self.record, self.forked_from = record, None
        if known is not None:
            return ("recall", self._deploy(known), record)
        tried = sorted(
            (r, j) for j, r in enumerate(report["rates"]) if r is not None and probe_steps > 0
        )
        if not tried:
            return ("new", self._new_world(name), record)
        self.probe = {"candidates": [j for _, j in tried], "left": self.current, "name": name,
                      "start": None, "steps": probe_steps, "record": record,
                      "returns": {self.current: list(returns)}}  # fmt: skip
        record["answer"] = "probe"
        return ("probe", self._deploy(tried[0][1]), record)

    def probe_step(self, agent, replay, *, episode_end: bool, kind: str, window: int,
                   level: float, alpha: float, returns=()):  # fmt: skip
        """While probing, after each env step (its transition stored in `replay`, `episode_end`
        whether it ended an episode): None (go on acting with the probed world), or once it has
        acted from an episode start for `probe_steps` transitions to an episode end, the
        verdict (`probe_verdict`) on them: ('recall', that world), ('probe', the next
        candidate: deploy it) or ('new', a copy of the model to fine-tune for the new world:
        of the world whose episodes in it returned most on average, the probed ones' and the
        one left at the alarm's; `returns`, of the episodes finished at this step, are what a
        probe's own episodes returned). Each verdict is added to the alarm's record ('probes':
        world, transitions, abstain, its p-value, return, ...; 'forked_from' at a new world)."""
        p = self.probe
        if p["start"] is None:  # the episode handed over is the other world's policy's
            if episode_end:
                p["start"] = replay.added
            return None
        p["returns"].setdefault(p["candidates"][0], []).extend(returns)
        n = replay.added - p["start"]
        if not episode_end or n < p["steps"]:
            return None
        j = p["candidates"].pop(0)
        stream = replay.recent_stream(n, since=p["start"])
        w = self.worlds[j]
        r = stream_report(agent, w.state.params, w.calib, stream, kind=kind, window=window)
        known, pvalue = probe_verdict(r["abstain"], w, level=level, alpha=alpha)
        mean_return = float(np.mean(p["returns"][j])) if p["returns"].get(j) else math.nan
        p["record"]["probes"].append(
            {"world": j, "transitions": n, "p": pvalue, "return": mean_return, **r}
        )
        if known:
            self.probe = None
            p["record"] |= {"recalled": j, "answer": "recall"}
            return ("recall", self._deploy(j))
        if p["candidates"]:
            p["start"] = replay.added  # an episode just ended: the next one is the new probe's
            return ("probe", self._deploy(p["candidates"][0]))
        self.probe = None
        shown = {k: float(np.mean(v)) for k, v in p["returns"].items() if v}
        source = max(shown, key=shown.get) if shown else p["left"]
        p["record"] |= {"answer": "new", "forked_from": source, "returns_shown": shown}
        fork = self._deploy(source)
        self._new_world(p["name"])
        return ("new", fork)

    def start_review(self, state, steps: int) -> World:
        """The new world's model `state` has learnt (its learning window is over): before it is
        kept, a fresh copy of the stored model it was copied from acts (no learning, the
        detector silent, the same gate) for >= `steps` transitions from the next episode start,
        then the learnt model as long, and the one whose episodes returned more is kept
        (`review_step`). Returns the source world (a copy of its state) to deploy now. The
        learnt model goes second so that its turn can already be its calibration data (the
        likely outcome where learning helped: HalfCheetah). Fine-tuning on the new world alone
        can lose what the old model already did well there (Hopper mass x2: 285 frozen, 173
        fine-tuned). (Letting the source act through the whole learning window instead, the
        copy learning from its data alone, was measured and dropped: the copies then returned
        -19 against 142 on HalfCheetah mass x2, `continual_v12/shadow`.)"""
        self.review = {"stage": "source", "start": None, "steps": steps, "learnt": _copy(state),
                       "returns": {"learnt": [], "source": []}}  # fmt: skip
        return self._source()

    def review_step(self, replay, *, episode_end: bool, returns=()):
        """While reviewing, after each env step (as `probe_step`): None (go on), ('learnt', the
        learnt state: deploy it; from here its episodes may be held out for its calibration)
        once the source model has had its turn, then ('kept', None: keep the learnt model
        deployed, or the source World to deploy and recalibrate instead), by the two turns'
        mean episode return (ties keep the learnt one). The outcome goes into the alarm's
        record under 'review'."""
        r = self.review
        if r["start"] is None:  # the episode under way began with the other model acting
            if episode_end:
                r["start"] = replay.added
            return None
        r["returns"][r["stage"]].extend(returns)
        if not episode_end or replay.added - r["start"] < r["steps"]:
            return None
        if r["stage"] == "source":
            r |= {"stage": "learnt", "start": replay.added}
            return ("learnt", r["learnt"])
        shown = {k: float(np.mean(v)) if v else math.nan for k, v in r["returns"].items()}
        keep = "source" if shown["source"] > shown["learnt"] else "learnt"
        if self.record is not None:
            self.record["review"] = {"source": self.forked_from, "returns": shown, "kept": keep}
        source = self._source() if keep == "source" else None
        self.review = self.forked_from = None
        return ("kept", source)

    def set_level(self, returns) -> None:
        """The deployed world's return level: the median return of the episodes its model acted
        for its gate's final calibration (those that armed the change detector: in its world, as
        the gate assumes). Episodes between a change and its detection are not in it."""
        if len(returns):
            w = self.worlds[self.current]
            self.worlds[self.current] = dataclasses.replace(w, level=float(np.median(returns)))

    def copes(self, returns, *, within: float) -> bool:
        """Whether the model a new world's copy comes from (`forked_from`) already does as well
        there: its episodes' mean return in the new world (`returns`; at least one) is at least
        its level in its own world minus `within` times its magnitude. Then there is nothing to
        learn, only the gate to recalibrate (Hopper: a policy that keeps its gait under mass x2
        and gain x0.5, where fine-tuning on the new world alone made it fall). False without
        returns or a known level, or with `within` < 0 (off)."""
        level = self.worlds[self.forked_from].level if self.forked_from is not None else math.nan
        if within < 0 or not len(returns) or not math.isfinite(level):
            return False
        return bool(np.mean(returns) >= level - within * abs(level))

    def keep_as_is(self) -> World:
        """The new world keeps a copy of its source's model (`copes`): no learning, no review;
        returns it to deploy (with the source's gate until it is recalibrated)."""
        source = self._source()
        if self.record is not None:
            self.record["kept_as_is"] = self.forked_from
        self.forked_from = None
        return source

    def _source(self) -> World:
        w = self.worlds[self.forked_from]
        return dataclasses.replace(w, state=_copy(w.state))

    def _deploy(self, j: int) -> World:
        self.current = j
        w = self.worlds[j]
        return dataclasses.replace(w, state=_copy(w.state))

    def _new_world(self, name: str) -> None:
        w = self.worlds[self.current]
        self.forked_from = self.current
        self.worlds.append(World(None, w.calib, w.reference, name))
        self.current = len(self.worlds) - 1

    def original(self, state):
        """The model state that acts in the first world: `state` while it is deployed."""
        return state if self.current == 0 else self.worlds[0].state
