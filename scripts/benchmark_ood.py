"""OOD benchmark: does the model know when it doesn't know? `python -m scripts.benchmark_ood RUN_DIR ...`

For each trained run folder: collect fresh episodes (seeds never used in training) in the
training world (a calibration split and a test split) and in shifted worlds (envs.shifts: the
severe and minor shifts, from reset, and the severe ones switched on mid-episode); score every
transition; report per shift AUROC / AP / FPR95 per transition and over a 10-step window (and
of the gate's bias kinds (agents.abstain), `bias_w10`, worldmodel.bias's windowed test on the
signed residuals, and `either_w10`, the max of it and `max_w10` each over its per-phase
in-distribution quantile: bias test and scales from alternate calibration episodes, the
threshold from the others, as agents.calibration.calibrate does), the
in-distribution false-abstain rate against alpha, detection delay, risk-coverage / AURC of the
5-step prediction error, predictive-interval coverage, and the return with abstention+fallback
against without in a severely shifted world. Raw results: scripts/results/ood_<env>_s<seed>.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from scripts.machine import write_result

RESULTS = Path(__file__).resolve().parent / "results"
KINDS = ("epistemic", "surprise", "max")


def collect(agent, state, env_id, *, episodes, seed, max_steps, plan, shift=None):
    """Run `episodes` greedy episodes in parallel (gate off); returns transition arrays in
    episode order: obs, action, next_obs (T, ...), terminated, first, t (step in episode) (T,),
    and 'returns' (episodes,)."""
    from envs import Driver, make_env
    from worldmodel.rng import key_for

    env = make_env(env_id, num_envs=episodes, seed=seed, max_episode_steps=max_steps, shift=shift)
    driver = Driver(env)
    driver.reset(seed=seed)
    carry = agent.init_carry(episodes)
    rows: list[list[tuple]] = [[] for _ in range(episodes)]
    done = np.zeros(episodes, bool)
    returns = np.zeros(episodes)
    decision = 0
    try:
        while not done.all():
            action, carry, _ = agent.act(
                state, carry, driver.obs, driver.first,
                key=key_for(seed, "ood", decision), explore=False, plan=plan,
            )  # fmt: skip
            step = driver.step(np.asarray(action))
            for i in np.flatnonzero(~done):
                rows[i].append((step.obs[i], step.action[i], step.next_obs[i], step.terminated[i]))
            returns += np.where(done, 0.0, step.reward)
            done |= step.terminated | step.truncated
            decision += 1
    finally:
        env.close()
    out = {
        k: np.concatenate([np.stack([r[j] for r in ep]) for ep in rows])
        for j, k in enumerate(("obs", "action", "next_obs", "terminated"))
    }
    out["t"] = np.concatenate([np.arange(len(ep)) for ep in rows])
    out["first"] = out["t"] == 0
    out["returns"] = returns
    return out


def _detect(neg: np.ndarray, pos: np.ndarray) -> dict:
    from agents.metrics import auroc, average_precision, fpr_at_tpr

    return {
        "auroc": auroc(neg, pos),
        "ap": average_precision(neg, pos),
        "fpr95": fpr_at_tpr(neg, pos),
    }


def _scores(agent, params, calib, data) -> dict:
    from agents.calibration import score_transitions
    from worldmodel.uncertainty import window_mean

    s = score_transitions(agent, params, calib, data["obs"], data["action"], data["next_obs"])
    for k in KINDS:
        s[f"{k}_w10"] = window_mean(s[k], data["first"], 10)
    return s


def _two_sided(calib_scores, scores) -> np.ndarray:
    """-log of the two-sided conformal p-value of each score against the calibration scores:
    large when a score is unusually high *or* unusually low."""
    from agents.change import conformal_pvalues

    hi = conformal_pvalues(calib_scores, scores)
    lo = conformal_pvalues(-np.asarray(calib_scores), -np.asarray(scores))
    return -np.log(np.minimum(1.0, 2.0 * np.minimum(hi, lo)))


@functools.cache
def _imagine_fns(model):
    """Jitted (imagine, encode) of `model`, compiled once per benchmark, not per call."""
    import jax

    from worldmodel.uncertainty import imagine

    return jax.jit(functools.partial(imagine, model)), jax.jit(model.encode)


def _k_step(agent, params, calib, data, epistemic, k: int = 5):
    """(ex-ante step-0 epistemic, trajectory score, k-step latent error) for every t whose
    episode has k more steps; `epistemic` (T,) are the transitions' scores already computed."""
    t, first = data["t"], data["first"]
    ep = np.cumsum(first) - 1
    idx = np.flatnonzero([(i + k < len(t)) and ep[i + k] == ep[i] for i in range(len(t))])
    if len(idx) == 0:
        return None
    acts = np.stack([data["action"][idx + j] for j in range(k)], axis=1)
    imagine, encode = _imagine_fns(agent.model)
    z_k, traj = imagine(params, calib, data["obs"][idx], acts)
    z_true = encode(params, data["obs"][idx + k])
    err = np.asarray(((z_k - z_true) ** 2).mean(axis=-1))
    return {"epistemic": epistemic[idx], "trajectory": np.asarray(traj), "error": err}


def _risk(scored: dict) -> dict:
    from agents.metrics import aurc, risk_coverage

    if scored is None:  # no episode lasted k + 1 steps
        return None
    err = scored["error"]
    out = {"oracle_aurc": aurc(err, err), "random_aurc": float(err.mean())}
    for name in ("epistemic", "trajectory"):
        out[f"aurc_{name}"] = aurc(scored[name], err)
        cov, risk = risk_coverage(scored[name], err)
        pick = np.linspace(0, len(cov) - 1, 50).astype(int)
        out[f"curve_{name}"] = {"coverage": cov[pick].tolist(), "risk": risk[pick].tolist()}
    return out


def benchmark(run_dir: Path, args) -> dict:
    from agents.abstain import decision_scores
    from agents.agent import make_agent
    from agents.calibration import calibrate
    from agents.evaluation import evaluate
    from agents.metrics import detection_delay, interval_coverage
    from agents.replay import Replay
    from envs import env_spec
    from envs.shifts import MINOR_SHIFTS, SEVERE_SHIFTS
    from scripts.bundle import load_run
    from worldmodel.uncertainty import conformal_threshold

    agent, state, cfg, meta, replay_arrays = load_run(run_dir)
    params, env_id, plan = state.params, cfg.env.id, args.policy == "plan"
    spec = env_spec(env_id)
    replay = Replay(cfg.train.replay_capacity, spec["obs_dim"], spec["act_dim"], cfg.env.num_envs)
    replay.load_state_dict(replay_arrays)
    batch = replay.sample(4096, 1, np.random.default_rng(0))
    train = {
        "obs": batch["obs"][:, 0],
        "action": batch["action"][:, 0],
        "next_obs": batch["obs"][:, 1],
    }
    E, T, base = args.episodes, args.max_steps, 10_000 * (1 + cfg.seed)
    run = functools.partial(collect, agent, state, env_id, max_steps=T, plan=plan)
    tic = time.perf_counter()
    calib_data = run(episodes=E, seed=base)
    test = run(episodes=E, seed=base + 1000)
    # normalisers from training transitions, threshold from the calibration split
    calib, _ = calibrate(agent, params, train, calib_data, kind="max", window=1, alpha=args.alpha)
    s_cal, s_test = _scores(agent, params, calib, calib_data), _scores(agent, params, calib, test)
    # the gate's bias kinds, calibrated as the gate is: bias test and per-phase scales from the
    # calibration split's alternate episodes, the conformal threshold from the others
    gates = {
        f"{k}_w10": calibrate(
            agent, params, train, calib_data, kind=k, window=10, alpha=args.alpha
        )[0]
        for k in ("bias", "either")
    }

    def add_bias_either(sc, d):
        for name, c in gates.items():
            sc[name] = decision_scores(sc, d["first"], kind=name[:-4], window=10, calib=c)

    add_bias_either(s_test, test)
    result = {"env": env_id, "run": str(run_dir), "seed": cfg.seed, "env_steps": meta["env_steps"],
              "policy": args.policy, "episodes": E, "max_steps": T, "alpha": args.alpha,
              "calib_transitions": len(calib_data["t"]), "test_transitions": len(test["t"]),
              "return_in_distribution": float(test["returns"].mean())}  # fmt: skip

    thresholds, false_abstain = {}, {}
    for kind in KINDS:
        for w in (1, 10):
            name = f"{kind}_w{w}"
            thr = conformal_threshold(
                decision_scores(s_cal, calib_data["first"], kind=kind, window=w), args.alpha
            )
            dec = decision_scores(s_test, test["first"], kind=kind, window=w)
            thresholds[name], false_abstain[name] = thr, float(np.mean(dec > thr))
    for name, c in gates.items():
        thresholds[name] = float(c.threshold)
        false_abstain[name] = float(np.mean(s_test[name] > thresholds[name]))
    result["thresholds"], result["false_abstain_rate"] = thresholds, false_abstain
    # where in the episode the windowed tests alarm in distribution (first 10 steps vs later)
    early = test["t"] < 10
    result["false_abstain_by_t"] = {
        name: {part: float(np.mean(s_test[name][m] > thresholds[name]))
               for part, m in (("t<10", early), ("t>=10", ~early)) if m.any()}
        for name in ("max_w10", "bias_w10", "either_w10")
    }  # fmt: skip
    gate_calib = calib.replace(threshold=np.float32(thresholds["max_w1"])).to_json()
    result["calibration"] = gate_calib  # the gate's (score max, window 1) calibration
    if args.write_calibration:  # visualize/evaluate read it from the run folder
        (run_dir / "calibration.json").write_text(json.dumps(gate_calib))

    result["interval_coverage"] = interval_coverage(
        s_test["interval_z"], z_calib=s_cal["interval_z"]
    )
    k_test = _k_step(agent, params, calib, test, s_test["epistemic"])
    result["risk_coverage_in_distribution"] = _risk(k_test)

    shifts = {f"severe/{k}": v for k, v in SEVERE_SHIFTS.items()}
    shifts |= {f"minor/{k}": v for k, v in MINOR_SHIFTS.items()}
    result["shifts"] = {}
    pooled = []
    for name, shift in shifts.items():
        data = run(episodes=E, seed=base + 1000, shift=shift)  # the test seeds: paired worlds
        s = _scores(agent, params, calib, data)
        add_bias_either(s, data)
        r = {"return": float(data["returns"].mean()), "transitions": len(data["t"])}
        for kind in KINDS:
            r[kind] = _detect(s_test[kind], s[kind])
            r[f"{kind}_w10"] = _detect(s_test[f"{kind}_w10"], s[f"{kind}_w10"])
        for name_w in ("bias_w10", "either_w10"):
            r[name_w] = _detect(s_test[name_w], s[name_w])
        for part in ("epistemic_latent", "epistemic_obs", "surprise_latent", "surprise_obs"):
            r[part] = _detect(s_test[part], s[part])["auroc"]
        # two-sided: the windowed score left its calibration range in either direction
        two = lambda x: _two_sided(s_cal["max_w10"], x)  # noqa: E731
        r["twosided_w10"] = _detect(two(s_test["max_w10"]), two(s["max_w10"]))
        dec = decision_scores(s, data["first"], kind="max", window=1)
        r["abstain_rate"] = float(np.mean(dec > thresholds["max_w1"]))
        result["shifts"][name] = r
        if name.startswith("severe"):
            pooled.append(_k_step(agent, params, calib, data, s["epistemic"]))
    both = [b for b in [k_test, *pooled] if b is not None]
    joined = {k: np.concatenate([b[k] for b in both]) for k in both[0]} if both else None
    result["risk_coverage_pooled"] = _risk(joined)

    # mid-episode switches: detection delay with the 10-step window of the gate's score
    # a switch must happen inside the episodes: at most half the median test-episode length
    lengths = np.diff(np.r_[np.flatnonzero(test["first"]), len(test["first"])])
    at, delays = int(min(args.switch_at, max(1, np.median(lengths) // 2))), {}
    thr10 = thresholds["max_w10"]
    for name, shift in SEVERE_SHIFTS.items():
        import dataclasses

        data = run(episodes=E, seed=base + 2000, shift=dataclasses.replace(shift, at_step=at))
        s = _scores(agent, params, calib, data)
        ep = np.cumsum(data["first"]) - 1
        long = [e for e in range(E) if (data["t"][ep == e]).max() > at]
        add_bias_either(s, data)
        for prefix, dec, thr in (
            ("", decision_scores(s, data["first"], kind="max", window=10), thr10),
            ("bias_", s["bias_w10"], thresholds["bias_w10"]),
            ("either_", s["either_w10"], thresholds["either_w10"]),
        ):
            per = [detection_delay(dec[ep == e], thr, at) for e in long]
            got = [d for d, _ in per if d is not None]
            delays.setdefault(name, {"episodes": len(per)})
            delays[name] |= {f"{prefix}detected": len(got), f"{prefix}median_delay": float(np.median(got)) if got else None,
                             f"{prefix}delays": got, f"{prefix}false_alarms_before_switch": int(sum(fa for _, fa in per))}  # fmt: skip
    result["mid_episode"] = {"at_step": at, "window": 10, "threshold": thr10, "per_shift": delays}

    if args.fallback_episodes:
        gated = make_agent(
            spec["obs_dim"], spec["act_dim"],
            **{k: cfg.section(k) for k in ("model", "loss", "optim", "planner")},
            abstain={**cfg.section("abstain"), "enabled": True, "score": args.gate_score,
                     "window": 1 if args.gate_score == "max" else 10,
                     "fallback": args.fallback, "alpha": args.alpha},
        )  # fmt: skip
        if args.gate_score == "max":
            calib_gate = calib.replace(threshold=np.float32(thresholds["max_w1"]))
        else:
            calib_gate = gates["either_w10"]
        fb = {}
        for name in args.fallback_shifts:
            shift = SEVERE_SHIFTS[name]
            kw = dict(env_id=env_id, episodes=args.fallback_episodes, seed=base + 3000, plan=True, max_episode_steps=T, shift=shift)  # fmt: skip
            on = evaluate(gated, state, calib=calib_gate, **kw)
            off = evaluate(agent, state, calib=None, **kw)
            fb[name] = {"with_abstention": on, "without": off, "fallback": args.fallback,
                        "gate_score": args.gate_score}  # fmt: skip
        result["fallback"] = fb
    result["seconds"] = time.perf_counter() - tic
    return result


def _summary(r: dict) -> str:
    sev = [v for k, v in r["shifts"].items() if k.startswith("severe")]
    lines = [f"{r['env']} seed {r['seed']} ({r['env_steps']} training steps, policy {r['policy']})"]
    for kind in KINDS:
        for suffix in ("", "_w10"):
            a = np.mean([v[kind + suffix]["auroc"] for v in sev])
            f = np.mean([v[kind + suffix]["fpr95"] for v in sev])
            lines.append(f"  severe avg {kind + suffix:>14}: AUROC {a:.3f}  FPR95 {f:.3f}")
    for name in ("bias_w10", "either_w10"):
        a = np.mean([v[name]["auroc"] for v in sev])
        f = np.mean([v[name]["fpr95"] for v in sev])
        lines.append(f"  severe avg {name:>14}: AUROC {a:.3f}  FPR95 {f:.3f}")
    fa = r["false_abstain_rate"]
    lines.append(
        f"  false-abstain (alpha {r['alpha']}): " + ", ".join(f"{k} {v:.3f}" for k, v in fa.items())
    )
    cov = r["interval_coverage"]
    lines.append(
        f"  interval coverage nominal {cov['nominal']}: gaussian {np.round(cov['gaussian'], 3).tolist()} conformal {np.round(cov['conformal'], 3).tolist()}"
    )
    rc = r["risk_coverage_in_distribution"] or {}
    if rc:
        lines.append(
            f"  AURC (in-dist) epistemic {rc['aurc_epistemic']:.4g} trajectory {rc['aurc_trajectory']:.4g} random {rc['random_aurc']:.4g} oracle {rc['oracle_aurc']:.4g}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders made by scripts.train")
    p.add_argument("--episodes", type=int, default=20, help="episodes per split and per shift")
    p.add_argument("--max-steps", type=int, default=400, help="episode cap (raw env steps)")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument(
        "--policy", choices=("prior", "plan"), default="prior", help="how episodes are acted"
    )
    p.add_argument("--switch-at", type=int, default=100, help="step of the mid-episode switch")
    p.add_argument(
        "--fallback-episodes",
        type=int,
        default=0,
        help="episodes for the return with/without abstention",
    )
    p.add_argument("--fallback", choices=("hold", "prior", "stop"), default="prior")
    p.add_argument(
        "--gate-score",
        choices=("max", "either"),
        default="either",
        help="the gate of the fallback episodes: max (window 1) or either (window 10)",
    )
    p.add_argument("--fallback-shifts", nargs="*", default=["mass", "actuator_gain"])
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--write-calibration",
        action="store_true",
        help="also write RUN/calibration.json (read by visualize and evaluate)",
    )
    args = p.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    from worldmodel.errors import UserError

    try:
        for run_dir in args.runs:
            result = benchmark(run_dir, args)
            result["command"] = "python -m scripts.benchmark_ood " + " ".join(
                sys.argv[1:] if argv is None else argv
            )
            env_name = result["env"].split("-")[0].replace("/", "_")
            name = f"ood_{env_name}_s{result['seed']}.json"
            write_result(args.out / name, result, default=float)
            print(_summary(result), flush=True)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
