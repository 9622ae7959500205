"""Show what the world model imagines: `python -m scripts.visualize RUN_DIR [--steps 0 200 400]
[--horizon 30] [--out DIR] [--gif] [--size 480]`.

Loads the newest checkpoint of RUN_DIR (or an exported bundle), runs the agent greedily for one
episode on an evaluation seed, and at each --steps decision imagines --horizon steps open loop
from the real latent with the actions actually taken (model.next_mean). Imagined latents are
decoded to observations by a probe fit after the fact (worldmodel/probe.py) on the run's replay
observations, or on this rollout's observations when the checkpoint has none (the output says
which), then mapped to simulator states (envs/state_map.py) and rendered real | imagined. Under
them: the epistemic score (head disagreement at the imagined latent and actual action, normalised
by the calibration's latent scale when it has one), the abstention gate's score at the real steps
and the calibrated threshold when the run has one (calibration.json or the checkpoint's; on a
right-hand axis when it is not on the imagined score's scale), and the prediction error
||decoded imagined obs - real obs|| with the probe's own error on real observations. Tasks
whose observations do not determine a simulator state (Reacher, the point mass) show real vs
imagined observation channels instead of frames. Writes DIR/visualize.mp4 (and .gif with
--gif), DIR/visualize.npz (real_obs, imagined_obs, scores, real_scores, errors, probe_errors,
actions, steps, lengths, threshold), DIR/segment-<t>.png (each segment's last frame) and
DIR/summary.json. DIR defaults to RUN_DIR/visualize-<checkpoint step>.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 200, 400])
    parser.add_argument("--horizon", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--gif", action="store_true", help="also write a (half-size) gif")
    parser.add_argument("--size", type=int, default=480, help="rendered frame size (pixels)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default newest)")
    parser.add_argument("--seed", type=int, default=None, help="default: seed + eval.seed_offset")
    parser.add_argument("--no-plan", action="store_true", help="act with the policy prior only")
    parser.add_argument("--probe-steps", type=int, default=2000, help="probe fit steps")
    parser.add_argument("--fps", type=float, default=None, help="default: real time")
    return parser.parse_args(argv)


def _check(args, UserError) -> None:
    if args.size < 32 or args.size % 16:
        raise UserError(f"--size must be a multiple of 16 (video blocks), >= 32; got {args.size}")
    if args.horizon < 1:
        raise UserError(f"--horizon must be >= 1, got {args.horizon}")
    if min(args.steps) < 0:
        raise UserError(f"--steps must be >= 0, got {min(args.steps)}")
    if args.probe_steps < 1:
        raise UserError(f"--probe-steps must be >= 1, got {args.probe_steps}")


def _segments(roll: dict, steps: list[int], horizon: int) -> dict:
    """Windows of the rollout starting at each step: real obs (S, H+1, D) NaN past the episode's
    end, actions (S, H, A) zero there, lengths (S,) imagined steps available (<= H)."""
    obs, action = roll["obs"], roll["action"]
    S, D, A = len(steps), obs.shape[1], action.shape[1]
    real = np.full((S, horizon + 1, D), np.nan, np.float32)
    actions = np.zeros((S, horizon, A), np.float32)
    lengths = np.zeros(S, np.int64)
    for i, s in enumerate(steps):
        n = min(horizon, roll["length"] - s)
        real[i, : n + 1], actions[i, :n], lengths[i] = obs[s : s + n + 1], action[s : s + n], n
    return {"real": real, "actions": actions, "lengths": lengths}


def _window(values: np.ndarray, start: int, horizon: int) -> np.ndarray:
    """values[start : start + horizon] NaN-padded to (horizon,)."""
    out = np.full(horizon, np.nan)
    part = values[start : start + horizon]
    out[: len(part)] = part
    return out


def _imagine(bundle, probe, seg: dict, epi_scale) -> dict:
    """Open-loop imagination of every segment; NaN where a segment ended."""
    from worldmodel.probe import open_loop

    real, lengths = seg["real"], seg["lengths"]
    filled = real.copy()  # the device side gets finite inputs: pad with each segment's last obs
    for i, n in enumerate(lengths):
        filled[i, n + 1 :] = real[i, n]
    imagined, scores, recon = (
        np.array(x, np.float64)
        for x in open_loop(
            bundle.agent.model, bundle.state.params, probe, filled, seg["actions"], epi_scale
        )
    )
    for i, n in enumerate(lengths):
        imagined[i, n + 1 :], recon[i, n + 1 :], scores[i, n:] = np.nan, np.nan, np.nan
    return {
        "imagined": imagined,
        "scores": scores,
        "errors": np.linalg.norm(imagined - real, axis=-1),
        "probe_errors": np.linalg.norm(recon - real, axis=-1),
    }


# The calibration layout whose gate score is the latent disagreement normalised by epi_scale.
_LATENT_ONLY = {"epi_scale", "res_scale", "threshold", "n", "alpha"}


def _calibration(calibration: dict | None, latent_dim: int, kind: str, UserError):
    """(threshold, epi_scale (L,) or None, comparable) from a calibration JSON.

    The imagined score is the latent head disagreement, divided by epi_scale when the
    calibration has one of shape (L,). `comparable`: the threshold is on that same score (a
    bare {'threshold'} file, or a latent-only calibration of an 'epistemic' gate); otherwise
    (a gate that also scores observations or surprise) it applies to the real gate score only.
    No threshold (None) when uncalibrated.
    """
    if not calibration or calibration.get("threshold") is None:
        return None, None, False
    try:
        threshold = float(calibration["threshold"])
        scale = calibration.get("epi_scale")
        scale = None if scale is None else np.asarray(scale, np.float32)
    except (TypeError, ValueError) as err:
        raise UserError(f"calibration: threshold/epi_scale must be numbers ({err})") from err
    if scale is not None and scale.shape != (latent_dim,):
        scale = None
    comparable = "epi_scale" not in calibration or (
        set(calibration) == _LATENT_ONLY and scale is not None and kind == "epistemic"
    )
    return threshold, scale, comparable


def _segment_frames(i, s, seg, im, roll, *, state_map, renderer, threshold, size, labels):
    """Yield the frames (H_img, W, 3) of segment i (starting at decision s), one per h."""
    from scripts.frames import channel_panel, label, strip_panel

    n = int(seg["lengths"][i])
    strip_h = max(48, 16 * round(0.75 * size / 16))
    title = f"decision {s}: open-loop imagination with the actions taken"
    strip = strip_panel(
        im["scores"][i, :n],
        im["errors"][i, : n + 1],
        im["probe_errors"][i, : n + 1],
        threshold=threshold,
        width=2 * size,
        height=strip_h,
        title=title,
        real_scores=roll["score"][s : s + n],
        **labels,
    )
    if state_map is None:
        top = channel_panel(
            seg["real"][i, : n + 1], im["imagined"][i, : n + 1], width=2 * size, height=size
        )
    else:
        qpos_im, qvel_im = state_map.states(
            im["imagined"][i, : n + 1], root=state_map.root(roll["qpos"][s])
        )
    for h in range(n + 1):
        if state_map is None:
            upper = top.at(h)
        else:
            real = renderer.render(roll["qpos"][s + h], roll["qvel"][s + h])
            imag = renderer.render(qpos_im[h], qvel_im[h])
            upper = np.concatenate(
                [label(real, f"real  t={s + h}"), label(imag, f"imagined  t={s}+{h} (probe)")],
                axis=1,
            )
        yield np.concatenate([upper, strip.at(h)], axis=0)


def visualize(bundle, env, args) -> dict:
    """Everything after loading: rollout, probe, imagination, frames and files. Returns a
    summary dict (also written to OUT/summary.json)."""
    from envs.render import make_renderer
    from envs.state_map import make_state_map
    from scripts.bundle import calibration_of
    from scripts.rollout import VideoWriter, decision_fps, greedy_episode
    from worldmodel.errors import UserError
    from worldmodel.probe import fit_probe
    from worldmodel.rng import key_for

    cfg, agent = bundle.cfg, bundle.agent
    seed = cfg.seed + cfg.eval.seed_offset if args.seed is None else args.seed
    steps, H = sorted(set(args.steps)), args.horizon
    roll = greedy_episode(
        agent,
        bundle.state,
        env,
        seed=seed,
        plan=not args.no_plan,
        max_steps=max(steps) + H,
        calib=calibration_of(bundle),
    )
    kept = [s for s in steps if s < roll["length"]]
    if not kept:
        raise UserError(
            f"the episode ended after {roll['length']} decisions: choose --steps below that"
        )
    if bundle.obs_sample is not None and len(bundle.obs_sample) >= 2:
        fit_obs = bundle.obs_sample
        source = f"{len(fit_obs)} replay observations of the run"
    else:
        fit_obs = roll["obs"]
        source = f"{len(fit_obs)} observations of this rollout (the checkpoint has no replay)"
    probe, probe_info = fit_probe(
        agent.model,
        bundle.state.params,
        fit_obs,
        key=key_for(seed, "probe", 0),
        steps=args.probe_steps,
    )
    seg = _segments(roll, kept, H)
    kind = cfg.abstain.score if "abstain" in cfg else "epistemic"
    L = agent.model.latent_dim
    threshold, epi_scale, comparable = _calibration(bundle.calibration, L, kind, UserError)
    im = _imagine(bundle, probe, seg, epi_scale)
    score_name = "normalised latent disagreement" if epi_scale is not None else "head disagreement"
    labels = {
        "score_label": f"imagined: {score_name}",
        "real_label": f"gate score ({kind}), real steps",
        "threshold_label": "threshold" if comparable else f"threshold of the gate score ({kind})",
        "same_scale": comparable or threshold is None,
    }
    state_map = make_state_map(env, action_repeat=cfg.env.action_repeat)
    out = args.out or Path(args.run_dir) / f"visualize-{bundle.step}"
    out.mkdir(parents=True, exist_ok=True)
    fps = args.fps or decision_fps(env, cfg.env.action_repeat)
    renderer = make_renderer(env, size=args.size) if state_map is not None else None
    writers = [VideoWriter(out / "visualize.mp4", fps=fps)]
    if args.gif:
        writers.append(VideoWriter(out / "visualize.gif", fps=fps))
    import imageio.v2 as imageio

    try:
        for i, s in enumerate(kept):
            frame = None
            for frame in _segment_frames(
                i, s, seg, im, roll, state_map=state_map, renderer=renderer,
                threshold=threshold, size=args.size, labels=labels,
            ):  # fmt: skip
                writers[0].append(frame)
                if args.gif:
                    writers[1].append(frame[::2, ::2] if args.size >= 256 else frame)
            imageio.imwrite(out / f"segment-{s}.png", frame)
    finally:
        for writer in writers:
            writer.close()
        if renderer is not None:
            renderer.close()
    np.savez(
        out / "visualize.npz",
        real_obs=seg["real"],
        imagined_obs=im["imagined"],
        scores=im["scores"],
        errors=im["errors"],
        probe_errors=im["probe_errors"],
        actions=seg["actions"],
        real_scores=np.stack([_window(roll["score"], s, H) for s in kept]),
        steps=np.asarray(kept),
        lengths=seg["lengths"],
        threshold=np.float64(np.nan if threshold is None else threshold),
        env_id=np.str_(cfg.env.id),
        step=np.int64(bundle.step),
        probe_source=np.str_(source),
    )
    summary = {
        "env_id": cfg.env.id,
        "checkpoint_step": bundle.step,
        "seed": seed,
        "episode_length": roll["length"],
        "episode_return": roll["return"],
        "steps": kept,
        "skipped_steps": [s for s in steps if s not in kept],
        "horizon": H,
        "frames": int(sum(n + 1 for n in seg["lengths"])),
        "view": "rendered states" if state_map is not None else "observation channels",
        "probe": {"fit_on": source, **probe_info},
        "threshold": threshold,
        "score": score_name,
        "threshold_applies_to": (
            None
            if threshold is None
            else "imagined and gate scores"
            if comparable
            else "the gate score on real steps only"
        ),
        "mean_error_by_segment": [float(np.nanmean(e)) for e in im["errors"]],
        "files": sorted(p.name for p in out.iterdir()),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    summary["out"] = str(out)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    from envs import make_single_env
    from scripts.bundle import load_bundle
    from worldmodel.errors import UserError

    try:
        _check(args, UserError)
        bundle = load_bundle(args.run_dir, step=args.step)
        cfg = bundle.cfg
        env = make_single_env(
            cfg.env.id,
            action_repeat=cfg.env.action_repeat,
            max_episode_steps=cfg.env.max_episode_steps,
        )
        try:
            summary = visualize(bundle, env, args)
        finally:
            env.close()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    probe = summary["probe"]
    print(f"{summary['env_id']} @ {summary['checkpoint_step']}: {summary['view']}")
    print(f"probe fit on {probe['fit_on']}; held-out R² {probe.get('val_r2', float('nan')):.3f}")
    if summary["skipped_steps"]:
        print(f"skipped steps past the episode's end: {summary['skipped_steps']}")
    print(f"threshold: {summary['threshold'] if summary['threshold'] is not None else 'none'}")
    print(f"wrote {summary['frames']} frames and arrays to {summary['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
