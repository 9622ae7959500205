"""Learning on the job (host loop): a deployed agent meets a schedule of worlds, notices each
change from its calibrated score (agents.change), keeps acting under its abstention gate,
adapts with old and new experience mixed, recalibrates for the new world, and is measured.

modes: 'adaptive' (detection -> replay mixing at `new_share` + `boost`x updates for
`boost_steps`), 'naive' (detection -> fine-tune on new-world data only, no boost), 'frozen' (no
updates at all), 'library' (one model per world, agents.library: detection -> a stored world
whose own gate accepts the data since the change is recalled as it was left; else each stored
world is tried out from the next episode for `probe_steps` (acting, no learning) and recalled
if its gate's abstain share is typical of its own world (agents.library.probe_verdict); else a
copy of the model whose episodes since the change returned most (the current one, or a probed
one) is fine-tuned on the new world's data only, with the boost; once it has learnt, it and the
model it came from each act `review_steps` and the one whose episodes returned more is kept;
with `keep_within` >= 0 a new world in which the model it would come from returns about as
much as in its own world (`Library.copes`) is not learnt at all: only the gate is
recalibrated). In the learning modes the new world's share of a batch ramps up over its first
`ramp` transitions (`new_world_share`). A detection is a suspicion confirmed by a second one
(`change.confirm`); the agent keeps acting under its gate meanwhile and adapts once confirmed. The deployed model changes only after a detected change: it learns for
`recalib_after` steps, then holds out every episode acted by the adapted model and is
recalibrated in stages: once a finite threshold is possible (the bias test left out), once
there are `Calibrator.min_holdout()` new transitions for the bias test, and once the change
detector has `change.min_episodes` reference episodes (it is not armed before: its threshold
set on fewer raised false alarms, agents.change); then it stays fixed until the next alarm
(updating it all along would make its calibration stale: measured, a first
version that did so raised false alarms within 12-71 steps in the unchanged world). The from-scratch reference per world is a plain `scripts.train` run with that
world's `shift.*` settings and the same budget.
emit(kind, env_step, data): 'episode' (return, world, abstain_rate), 'switch' (world),
'alarm' (delay after the switch, detection step), 'retracted' (an unconfirmed suspicion's
step), 'probe' (library: a tried world's verdict), 'review' (library: learnt vs source),
'calibration', 'eval'.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import numpy as np

from agents.calibration import Calibrator, holdout_decisions
from agents.change import ChangeConfig, ChangeDetector, split_episodes
from agents.evaluation import evaluate
from agents.library import MIN_STREAM, Library
from agents.replay import Replay
from envs import Driver, make_env
from envs.shifts import ShiftSpec, find_shift_wrappers, parse_shift
from worldmodel.errors import ConfigError
from worldmodel.rng import key_for, np_rng
from worldmodel.uncertainty import BIAS_KINDS

MODES = ("adaptive", "naive", "frozen", "library")
NEUTRAL = ShiftSpec("actuator_offset", 0.0)  # changes nothing (any env); lets worlds switch


@dataclasses.dataclass(frozen=True)
class ContinualConfig:
    """The `continual` config slice."""

    new_share: float = 0.5  # share of each batch from the new world after a detected change
    boost: int = 2  # updates per step x this right after a detected change
    boost_steps: int = 1000  # env steps the boost lasts
    recalib_after: int = 1000  # env steps after an alarm before the new world is recalibrated
    ramp: int = 500  # new-world transitions over which its batch share ramps up to full
    eval_episodes: int = 5  # greedy prior episodes per world for the forgetting figure
    deploy_episodes: int = 20  # detector reference episodes collected before deployment
    known_level: float = 0.25  # library: a stored world is recalled if its gate abstains on <= this
    probe_steps: int = 250  # library: transitions each stored world is tried out for (0: no probes)
    review_steps: int = 500  # library: learnt model vs its source, each acting this long (0: none)
    keep_within: float = 0.1  # library: no learning where the source copes (<0: off)

    def __post_init__(self):
        if not 0.0 <= self.new_share <= 1.0:
            raise ConfigError(f"continual.new_share must be in [0, 1], got {self.new_share}")
        if not 0.0 <= self.known_level <= 1.0:
            raise ConfigError(f"continual.known_level must be in [0, 1], got {self.known_level}")
        if self.review_steps < 0:
            raise ConfigError(
                f"continual.review_steps must be >= 0 (0: no review), got {self.review_steps}"
            )
        if self.probe_steps < 0:
            raise ConfigError(
                f"continual.probe_steps must be >= 0 (0: no probes), got {self.probe_steps}"
            )
        if self.deploy_episodes < 0:
            raise ConfigError(f"continual.deploy_episodes must be >= 0, got {self.deploy_episodes}")
        if self.ramp < 0:
            raise ConfigError(
                f"continual.ramp must be >= 0 (0: full share at once), got {self.ramp}"
            )


def new_world_share(mode: str, cc: ContinualConfig, new: int) -> float:
    """Batch share of the `new` transitions stored since the alarm: `new_share` (adaptive) or
    all (naive), ramped up linearly over the first `ramp` of them. Without the ramp the first
    updates fit a handful of transitions (half or all of 256 windows from the first few steps):
    on Hopper they made the policy fall within 9-30 steps after every alarm (`continual_v5`)."""
    full = cc.new_share if mode == "adaptive" else 1.0
    return full * min(1.0, new / cc.ramp) if cc.ramp else full


def world_name(spec: ShiftSpec | None) -> str:
    return "original" if spec is None else f"{spec.kind} {spec.severity:g}"


def parse_schedule(phases) -> list[tuple[int, ShiftSpec | None]]:
    """[{steps: int, shift: {kind, severity, ...} | none}] -> [(steps, spec | None)]."""
    if not isinstance(phases, list) or not phases:
        raise ConfigError("schedule must be a non-empty list of {steps, shift} phases")
    out = []
    for i, phase in enumerate(phases):
        if not isinstance(phase, dict) or set(phase) - {"steps", "shift"} or "steps" not in phase:
            raise ConfigError(
                f"schedule phase {i} must be {{steps: int, shift: ...}}, got {phase!r}"
            )
        steps = phase["steps"]
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(
                f"schedule phase {i}: steps must be a positive integer, got {steps!r}"
            )
        shift = phase.get("shift")
        shift = None if shift in (None, "none") else parse_shift(shift)
        out.append((steps, shift))
    return out


def detector_reference(agent, params, calib, replay: Replay, *, size: int, since: int):
    """(scores (T,), the same split by episode, whether each episode terminated): the gate's
    decision scores of the conformal part of the newest `size` held-out transitions added since
    add() `since` (the data `calib` was set on); what the change detector ranks against and sets
    its threshold on."""
    h = replay.holdout_stream(size, since=since)
    ac = agent.abstain_cfg
    d, first, keep = holdout_decisions(
        agent, params, calib, h, kind=ac.score, window=ac.window, keep=True
    )
    episodes, terminated = split_episodes(d, first, np.asarray(h["terminated"], bool)[keep])
    return d, episodes, terminated


def _phase(world: str, switch_step: int) -> dict:
    """A phase's record: its alarms (detection steps; `confirmed` where each was confirmed),
    the suspicions raised in it and those retracted (never confirmed)."""
    return {"world": world, "switch_step": switch_step, "alarm_step": None, "alarms": [],
            "confirmed": [], "suspicions": [], "retracted": []}  # fmt: skip


def reference_episodes(held_episodes: int, score: str) -> int:
    """Episodes of the detector's reference among `held_episodes` held-out ones: the conformal
    part, every other episode for the bias kinds (`fit_split`), else all."""
    return held_episodes // 2 if score in BIAS_KINDS else held_episodes


def run_continual(agent, state, replay: Replay, calibrator: Calibrator, cfg, schedule, *,
                  mode: str, emit: Callable) -> dict:  # fmt: skip
    """Run the schedule from env step 0; `cfg` is the run's resolved config (sections env,
    train, abstain, change, continual). Returns {'phases': [...], 'final_state': state}."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    cc, tc, seed = ContinualConfig(**cfg.section("continual")), cfg.train, cfg.seed
    first_world = schedule[0][1] or NEUTRAL
    env = make_env(
        cfg.env.id, seed=seed, max_episode_steps=cfg.env.max_episode_steps, shift=first_world
    )
    wrapper = find_shift_wrappers(env)[0]
    driver = Driver(env)
    driver.reset(seed=seed)
    carry = agent.init_carry(1)

    def calib_scores(since: int) -> tuple[np.ndarray, list, list]:
        return detector_reference(
            agent, state.params, calibrator.calib, replay, size=cfg.abstain.calib_size, since=since
        )

    reference = calib_scores(calibrator.since)  # what it was calibrated on
    change_cfg = ChangeConfig(**cfg.section("change"))
    detector = ChangeDetector(
        change_cfg, reference[0], episodes=reference[1], terminated=reference[2], seed=seed
    )
    ends = np.cumsum([s for s, _ in schedule])
    phase, since, switch_step, boost_until, adapt_until = 0, 0, 0, -1, -1
    recalib_at, pending_switch, collect_from, held_from, level = None, False, None, 0, 0
    collect_step = 0  # env step where collect_from was set
    held_eps = 0  # held-out episodes finished since collect_from
    phases = [_phase(world_name(schedule[0][1]), 0)]
    ep_abstain = ep_decisions = updates = decision = 0
    lived: list[tuple[int, float]] = []  # library: the latest episodes' (end step, return)
    library = (  # mode 'library': the stored worlds
        Library(state, calibrator.calib, reference, phases[0]["world"])
        if mode == "library"
        else None
    )

    def deploy(world, *, watch: bool):
        """Act with a stored world's model and gate; `watch`: the change detector watches
        against its reference from here (a recalled world), else it stays silent, as after any
        alarm, until the next recalibration (a world on trial, or the new world)."""
        calibrator.calib = world.calib
        if watch:
            detector.reset(*world.reference)
        return world.state, world.reference

    def eval_original(when: str, model_state) -> None:
        """The forgetting figure: greedy prior episodes in the original world (same seeds before
        and after), their mean and each return (to judge the spread)."""
        r = evaluate(agent, model_state, env_id=cfg.env.id, episodes=cc.eval_episodes,
                     seed=seed + 777, plan=False,
                     max_episode_steps=cfg.env.max_episode_steps)  # fmt: skip
        phases[0][f"original_return_{when}"] = r["mean"]
        phases[0][f"original_returns_{when}"] = r["returns"]

    def keep_if_copes(returns):
        """library, continual.keep_within: where the model a new world would be learnt from
        returned about as much there (`returns`) as in its own world, (state, reference) of a
        copy of it to deploy as the new world's model, to be recalibrated only; else None."""
        if library is None or not library.copes(returns, within=cc.keep_within):
            return None
        return deploy(library.keep_as_is(), watch=False)

    eval_original("before", state)
    phases[0] |= {"detector_armed": detector.armed, "detector_h": detector.h,
                  "detector_episodes": detector.episodes}  # fmt: skip
    try:
        while driver.env_steps < ends[-1]:
            step_no = driver.env_steps
            if pending_switch and driver.first[0]:  # switch worlds at an episode boundary
                wrapper.set_shift(schedule[phase][1] or NEUTRAL)
                switch_step, pending_switch = step_no, False
                phases.append(_phase(world_name(schedule[phase][1]), step_no))
                emit("switch", step_no, {"world": phases[-1]["world"]})
            calibrator.start_episodes(driver.first, active=True)
            # deployed: act greedily, as the calibration episodes were acted (with exploration
            # noise the bias test sees the changed actions: 34% abstained on a 6k Hopper agent)
            action, carry, info = agent.act(
                state, carry, driver.obs, driver.first, key=key_for(seed, "continual", decision),
                explore=False, plan=tc.plan, calib=calibrator.calib,
            )  # fmt: skip
            info = jax.device_get(info)
            ep_abstain += int(info["abstained"][0])
            ep_decisions += 1
            began = bool(driver.first[0])
            step = driver.step(np.asarray(action))
            replay.add(step, holdout=calibrator.held)
            decision += 1
            if collect_from is not None and step.first[0] and calibrator.held[0]:
                held_eps += 1
            # the detector ranks the gate's decision score (an episode's edges untested, so it
            # needs to know how the step ended); every mode reports its alarms. An alarm is a
            # suspicion confirmed by a second crossing (change.confirm); it is reported at the
            # first, and adaptation starts at the second.
            ended, term = bool(step.first[0]), bool(step.terminated[0])
            n_retracted, was = len(detector.retracted), detector.suspected
            confirmed = False
            finished = [(driver.env_steps, ep["return"]) for ep in step.episodes]
            if library is not None:  # (end step, return) of the latest episodes
                lived = (lived + finished)[-100:]
            if library is not None and library.review is not None:  # learnt vs its source
                out = library.review_step(replay, episode_end=ended,
                                          returns=[r for _, r in finished])  # fmt: skip
                if out is not None and out[0] == "learnt":  # its turn: its calibration data too
                    state, recalib_at = out[1], driver.env_steps
                elif out is not None and out[1] is not None:  # the source kept: calibrate anew
                    state, reference = deploy(out[1], watch=False)
                    recalib_at, collect_from = driver.env_steps, None
                    calibrator.hold_all = False
                if out is not None:
                    emit("review", step_no, library.record.get("review", {"stage": out[0]}))
            elif library is not None and library.probe is not None:  # a stored world on trial
                verdict = library.probe_step(
                    agent, replay, episode_end=ended, kind=calibrator.cfg.score,
                    window=calibrator.cfg.window, level=cc.known_level,
                    alpha=calibrator.cfg.alpha, returns=[r for _, r in finished],
                )  # fmt: skip
                if verdict is not None:
                    state, reference = deploy(verdict[1], watch=verdict[0] == "recall")
                    if verdict[0] == "new":  # none was this world: learn it, as at an alarm
                        boost_until = step_no + cc.boost_steps
                        recalib_at = adapt_until = step_no + cc.recalib_after
                        calibrator.hold_next()
                        shown = library.record.get("returns_shown", {}).get(library.forked_from)
                        kept = keep_if_copes([] if shown is None else [shown])
                        if kept is not None:
                            state, reference = kept
                            recalib_at, adapt_until, boost_until = step_no, -1, -1
                    emit("probe", step_no, {"verdict": verdict[0], "world": library.current})
            else:
                confirmed = detector.update(
                    float(info["score"][0]), first=began, last=ended, terminated=term
                )
            back = step_no - detector.t + 1  # + the detector's decision index = the env step
            for t in detector.retracted[n_retracted:]:
                phases[-1]["retracted"].append(back + t)
                emit("retracted", step_no, {"suspected": back + t, "world": phases[-1]["world"]})
            if detector.suspected is not None and detector.suspected != was:
                phases[-1]["suspicions"].append(back + detector.suspected)
            if confirmed:
                since = replay.added
                detected = back + detector.alarm_step
                if detected < switch_step:  # suspected in the world before, confirmed in this
                    detected = step_no
                # a phase keeps every alarm; its detection delay is the first one's
                phases[-1]["alarms"].append(detected)
                phases[-1]["confirmed"].append(step_no)
                if phases[-1]["alarm_step"] is None:
                    phases[-1]["alarm_step"] = detected
                    phases[-1]["delay"] = (
                        detected - switch_step if phase == len(phases) - 1 else None
                    )
                boost_until = step_no + cc.boost_steps if mode in ("adaptive", "library") else -1
                answer = "new"
                if mode == "library":  # store the world left, then recall or try one, or anew
                    stream = replay.recent_stream(max(step_no + 1 - detected, MIN_STREAM))
                    answer, world, record = library.on_alarm(
                        agent, state, calibrator.calib, reference, stream,
                        kind=calibrator.cfg.score, window=calibrator.cfg.window,
                        level=cc.known_level, name=phases[-1]["world"], step=step_no,
                        probe_steps=cc.probe_steps, returns=[r for s, r in lived if s > detected],
                        before=[r for s, r in lived if s <= detected],
                    )  # fmt: skip
                    phases[-1].setdefault("recognition", []).append(record)
                    if world is not None:  # deploy it as it was left: no learning, its own gate
                        state, reference = deploy(world, watch=answer == "recall")
                        boost_until = adapt_until = -1
                        recalib_at = collect_from = None
                        calibrator.hold_all = False
                if mode != "frozen" and answer == "new":  # frozen: no learning, no recalibration
                    recalib_at = adapt_until = step_no + cc.recalib_after
                    calibrator.hold_next()  # the new world's calibration data
                    kept = keep_if_copes([r for t, r in lived if t > detected])
                    if kept is not None:  # no learning: recalibrate the gate from here
                        state, reference = kept
                        recalib_at, adapt_until, boost_until = step_no, -1, -1
                emit("alarm", step_no, {"delay": detected - switch_step, "detected": detected,
                                        "world": phases[-1]["world"]})  # fmt: skip
            for ep in step.episodes:
                emit(
                    "episode",
                    driver.env_steps,
                    ep | {"world": phases[-1]["world"], "abstain_rate": ep_abstain / ep_decisions},
                )
                ep_abstain = ep_decisions = 0
            if mode != "frozen" and step_no < adapt_until:  # learn from a detected change
                n = tc.updates_per_step * (cc.boost if step_no < boost_until else 1)
                share = new_world_share(mode, cc, replay.added - since)
                for _ in range(n):
                    rng = np_rng(seed, "continual_replay", updates)
                    batch = replay.sample_mixed(
                        tc.batch_size, tc.horizon, rng, since=since, share=share
                    )
                    state, _ = agent.update(
                        state, batch, key=key_for(seed, "continual_update", updates)
                    )
                    updates += 1
            if (
                library is not None
                and library.forked_from is not None
                and library.review is None
                and cc.review_steps
                and recalib_at is not None
                and driver.env_steps >= recalib_at
            ):  # the new world's model has learnt: does it beat the one it came from?
                state, _ = deploy(library.start_review(state, cc.review_steps), watch=False)
                recalib_at = None
            if recalib_at is not None and driver.env_steps >= recalib_at and collect_from is None:
                # adaptation is over and the model stays fixed until the next alarm: hold out
                # every episode from here, acted by this model (episodes acted before or during
                # adaptation are stale for the bias test, which also sees how the policy acts)
                calibrator.hold_all, collect_from, held_from = True, replay.added, replay.held
                level, held_eps, collect_step = 0, 0, driver.env_steps
            # recalibrate at an episode end each time the new world's held-out data reaches the
            # next level: (1) enough decisions for a finite conformal threshold (a few times
            # 1 / alpha after the bias kinds' fit split), the gate's windowed max alone; (2)
            # enough for the bias test too; (3) enough reference episodes to arm the change
            # detector. Then stop holding every episode out.
            new_held = replay.held - held_from
            need = calibrator.min_holdout()
            now = 0
            if new_held >= min(need, math.ceil(4 / calibrator.cfg.alpha)):
                now = 1
                if new_held >= need:
                    now = 2
                    ref = reference_episodes(held_eps, calibrator.cfg.score)
                    if ref >= change_cfg.min_episodes:
                        now = 3
            if collect_from is not None and driver.first[0] and now > level:
                result = calibrator.recalibrate(
                    state.params, replay, np_rng(seed, "recal", decision), since=collect_from
                )
                if result is not None:  # watch for the next change against the new world's scores
                    reference = calib_scores(collect_from)
                    detector.reset(*reference)
                    result |= {"detector_armed": detector.armed, "detector_h": detector.h,
                               "detector_episodes": detector.episodes}  # fmt: skip
                    emit("calibration", driver.env_steps, result)
                    level = now
                    if level == 3:
                        recalib_at = collect_from = None
                        calibrator.hold_all = False
                        if library is not None:  # its return level in the world just learnt
                            library.set_level([r for t, r in lived if t > collect_step])
            if phase + 1 < len(schedule) and driver.env_steps >= ends[phase]:
                phase, pending_switch = phase + 1, True
    finally:
        env.close()
    # library: the original world is acted by its own stored model
    eval_original("after", state if library is None else library.original(state))
    out = {"phases": phases, "final_state": state, "updates": updates}
    return out | ({} if library is None else {"worlds": [w.name for w in library.worlds]})
