"""Visualization and reporting: rendering, obs -> state maps, the decoder probe, bundles, videos,
the visualize script on a MuJoCo and a non-MuJoCo task, plots and the TensorBoard sink.

Run folders are built directly (config + one checkpoint of a freshly initialised debug-size
agent), not trained: these tests check plumbing, not learning.
"""

import dataclasses
import io
import json
import struct

import imageio.v2 as imageio
import jax
import mujoco
import numpy as np
import pytest

from envs import make_single_env
from envs.render import RenderError, make_renderer
from envs.state_map import make_state_map
from scripts import evaluate as evaluate_script
from scripts import plot_learning, plot_model
from scripts import visualize as visualize_script
from scripts.bundle import agent_for_config, calibration_of, export_bundle, load_bundle
from scripts.plots import plot_reliability, plot_risk_coverage
from scripts.rollout import VideoWriter
from scripts.sinks import ConsoleSink, TensorBoardSink
from worldmodel.checkpoint import Checkpointer
from worldmodel.config import load_config, save_config
from worldmodel.probe import fit_probe, open_loop
from worldmodel.rng import key_for

# imageio-ffmpeg starts ffmpeg by fork+exec, which JAX warns about needlessly.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")


def _fake_run(path, overrides, *, replay, threshold=None):
    """A run folder with config.yaml and a checkpoint (step 10) of a fresh agent."""
    cfg = load_config(["debug", *overrides, f"run_dir={path}"])
    save_config(cfg, path / "config.yaml")
    agent = agent_for_config(cfg)
    state = agent.init(key=key_for(cfg.seed, "init", 0))
    calib = agent.init_calibration().to_json()
    calib["threshold"] = threshold
    meta = {"env_steps": 10, "updates": 0, "decisions": 10, "calibration": calib}
    with Checkpointer(path / "checkpoints") as ckpt:
        ckpt.save(10, state=state, replay=replay, meta=meta)
    return path


@pytest.fixture(scope="module")
def pm_run(tmp_path_factory):
    """Point mass (no simulator state): replay observations for the probe, a threshold."""
    obs = np.random.default_rng(0).normal(size=(1, 64, 3)).astype(np.float32)
    replay = {"obs": obs, "size": np.array(40)}
    return _fake_run(tmp_path_factory.mktemp("pm"), [], replay=replay, threshold=0.5)


@pytest.fixture(scope="module")
def hc_run(tmp_path_factory):
    """HalfCheetah with 12-step episodes and no replay (the probe fits on the rollout)."""
    overrides = ["env.id=HalfCheetah-v5", "env.max_episode_steps=12"]
    return _fake_run(tmp_path_factory.mktemp("hc"), overrides, replay={})


def _frames(path):
    reader = imageio.get_reader(path)
    try:
        frames = [np.asarray(f) for f in reader]
    finally:
        reader.close()
    return np.stack(frames)


# ----------------------------------------------------------------------------- rendering
@pytest.mark.parametrize(
    ("backend", "error", "package"),
    [
        ("osmesa", AttributeError("'NoneType' object has no attribute 'glGetError'"), "libosmesa6"),
        ("egl", ImportError("Cannot initialize a EGL device display"), "libegl1"),
        ("", mujoco.FatalError("an OpenGL platform library has not been loaded"), "libegl1"),
    ],
)
def test_render_failure_names_the_package(monkeypatch, backend, error, package):
    env = make_single_env("InvertedPendulum-v5")

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setenv("MUJOCO_GL", backend)
    monkeypatch.setattr(mujoco, "Renderer", broken)
    with pytest.raises(RenderError) as info:
        make_renderer(env, size=64)
    env.close()
    message = str(info.value)
    assert len(message.splitlines()) == 1 and package in message


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Hopper-v5", "InvertedPendulum-v5"])
def test_state_map_zero_error(env_id):
    """Real observation -> state -> render reproduces the real frame exactly."""
    env = make_single_env(env_id)
    obs, _ = env.reset(seed=0)
    mapping = make_state_map(env)
    data = env.unwrapped.data
    observations, qpos = [obs], [data.qpos.copy()]
    for _ in range(6):  # a constant action: the root velocity is smooth enough to integrate
        obs, *_ = env.step(np.full(env.action_space.shape, 0.3, np.float32))
        observations.append(obs)
        qpos.append(data.qpos.copy())
    with make_renderer(env, size=64) as renderer:
        real = renderer.render(data.qpos, data.qvel)
        mapped = renderer.render(*mapping.state(obs, mapping.root(data.qpos)))
    env.close()
    np.testing.assert_array_equal(mapped, real)
    assert real.shape == (64, 64, 3) and real.dtype == np.uint8 and real.std() > 0
    # A trajectory: observed coordinates exact (float32), the root integrated from velocity.
    qpos_seq, _ = mapping.states(np.array(observations), mapping.root(qpos[0]))
    s = mapping.skip
    np.testing.assert_allclose(qpos_seq[:, s:], np.array(qpos)[:, s:], atol=1e-5)
    np.testing.assert_allclose(qpos_seq[:, :s], np.array(qpos)[:, :s], atol=0.02)


@pytest.mark.parametrize("env_id", ["Reacher-v5", "worldmodel/PointMass-v0"])
def test_state_map_none_where_obs_do_not_determine_state(env_id):
    env = make_single_env(env_id)
    assert make_state_map(env) is None
    env.close()


# ----------------------------------------------------------------------------- probe
def test_probe_fits_and_open_loop_matches_python_loop(tiny):
    model, params = tiny.model(), tiny.init_params(0)
    obs = np.random.default_rng(1).normal(size=(400, tiny.OBS_DIM)).astype(np.float32)
    probe, info = fit_probe(model, params, obs, key=jax.random.key(0), steps=300, hidden=(64,))
    assert info["n_val"] == 40 and np.isfinite(info["val_mse"]) and info["val_r2"] > 0.3
    actions = np.random.default_rng(2).uniform(-1, 1, (2, 4, tiny.ACT_DIM)).astype(np.float32)
    real = obs[:10].reshape(2, 5, tiny.OBS_DIM)
    imagined, scores, recon = open_loop(model, params, probe, real, actions)
    assert imagined.shape == recon.shape == (2, 5, tiny.OBS_DIM) and scores.shape == (2, 4)
    # Reference: the model's own one-step functions in a Python loop.
    one_step = jax.jit(
        lambda z, a: (model.disagreement(params, z, a), model.next_mean(params, z, a))
    )
    z = jax.jit(model.encode)(params, real[:, 0])
    for h in range(4):
        expected, z = one_step(z, actions[:, h])
        np.testing.assert_allclose(scores[:, h], expected, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(imagined[:, 0], recon[:, 0], atol=1e-5)


# ----------------------------------------------------------------------------- bundles, videos
def test_export_load_round_trip_gives_the_same_action(pm_run, tmp_path):
    out = export_bundle(pm_run, tmp_path / "bundle")
    assert {p.name for p in out.iterdir()} == {
        "params.npz", "config.yaml", "meta.json", "obs_sample.npz", "calibration.json"
    }  # fmt: skip
    run, exported = load_bundle(pm_run), load_bundle(out)
    assert exported.source == "bundle" and exported.step == run.step == 10
    assert json.loads((out / "calibration.json").read_text())["threshold"] == 0.5
    assert exported.obs_sample.shape == run.obs_sample.shape == (40, 3)
    obs = np.array([[0.3, -0.1, 0.5]], np.float32)
    actions = []
    for b in (run, exported):
        action, _, _ = b.agent.act(
            b.state, b.agent.init_carry(1), obs, np.ones(1, bool), key=jax.random.key(3),
            explore=False, plan=True, calib=calibration_of(b),
        )  # fmt: skip
        actions.append(np.asarray(action))
    np.testing.assert_array_equal(actions[0], actions[1])


def test_video_writer_frame_count_and_size(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (7, 48, 64, 3), dtype=np.uint8)
    for name in ("v.mp4", "v.gif"):
        with VideoWriter(tmp_path / name, fps=10) as writer:
            for frame in frames:
                writer.append(frame)
        assert _frames(tmp_path / name).shape[:3] == (7, 48, 64)


def test_evaluate_video_and_summary(hc_run, tmp_path, capsys):
    video, summary = tmp_path / "env0.mp4", tmp_path / "summary.json"
    args = [str(hc_run), "--episodes", "1", "--video", str(video), "--video-size", "64"]
    assert evaluate_script.main([*args, "--summary", str(summary)]) == 0
    result = json.loads(summary.read_text())
    assert {"returns", "mean", "std", "lengths", "step", "seeds", "command"} <= result.keys()
    assert result["lengths"] == [12] and result["step"] == 10 and "--video" in result["command"]
    assert result["video"]["return"] == pytest.approx(result["returns"][0], rel=1e-4)
    assert _frames(video).shape == (13, 64, 64, 3)  # the reset state and 12 steps
    assert json.loads((hc_run / "eval-10.json").read_text())["checkpoint_step"] == 10


def test_evaluate_video_of_non_mujoco_task_is_one_error_line(pm_run, tmp_path, capsys):
    capsys.readouterr()
    assert evaluate_script.main([str(pm_run), "--video", str(tmp_path / "v.mp4")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not a MuJoCo env" in err[0]


# ----------------------------------------------------------------------------- visualize
def test_visualize_mujoco_renders_real_and_imagined(hc_run, tmp_path):
    out = tmp_path / "vis"
    args = [str(hc_run), "--steps", "0", "9", "--horizon", "4", "--size", "64", "--out", str(out)]
    assert visualize_script.main([*args, "--probe-steps", "50", "--gif"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["view"] == "rendered states" and "this rollout" in summary["probe"]["fit_on"]
    assert summary["threshold"] is None  # uncalibrated: no threshold line
    frames = _frames(out / "visualize.mp4")  # segment 0: h = 0..4; segment 9: the episode ends
    assert frames.shape == (5 + 4, 64 + 48, 128, 3)  # at 12: h = 0..3
    assert _frames(out / "visualize.gif").shape[0] == 9
    with np.load(out / "visualize.npz") as npz:
        assert npz["imagined_obs"].shape == npz["real_obs"].shape == (2, 5, 17)
        assert npz["actions"].shape == (2, 4, 6) and list(npz["lengths"]) == [4, 3]
        assert np.isnan(npz["errors"][1, 4]) and np.isfinite(npz["errors"][0]).all()
    assert (out / "segment-0.png").is_file() and (out / "segment-9.png").is_file()


def test_visualize_channels_for_non_mujoco_task(pm_run, tmp_path, capsys):
    out = tmp_path / "vis"
    args = [str(pm_run), "--steps", "2", "--horizon", "3", "--size", "64", "--out", str(out)]
    assert visualize_script.main([*args, "--probe-steps", "50"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["view"] == "observation channels" and summary["threshold"] == 0.5
    assert "40 replay observations" in summary["probe"]["fit_on"]
    assert _frames(out / "visualize.mp4").shape == (4, 64 + 48, 128, 3)
    assert "replay observations" in capsys.readouterr().out
    png = plot_model.main([str(out / "visualize.npz"), "--out", str(tmp_path / "err.png")])
    assert png == 0 and imageio.imread(tmp_path / "err.png").ndim == 3


def test_visualize_steps_past_the_episode_is_one_error_line(pm_run, tmp_path, capsys):
    capsys.readouterr()
    args = [str(pm_run), "--steps", "500", "--size", "64", "--out", str(tmp_path / "v")]
    assert visualize_script.main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "choose --steps below" in err[0]


# ----------------------------------------------------------------------------- plots, sinks
def _write_run(folder, env_id, seed, evals, prior=None):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"seed: {seed}\nenv:\n  id: {env_id}\n")
    lines = [{"kind": "train", "env_step": 5, "loss": 1.0}]
    lines += [{"kind": "eval", "env_step": s, "mean": m, "std": 0.0} for s, m in evals]
    for line, p in zip(lines[1:], prior or [], strict=False):
        line["prior"] = {"mean": p, "std": 0.0, "returns": [p], "lengths": [1]}
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def test_plots_from_synthetic_run_folders(tmp_path):
    runs = tmp_path / "runs"
    _write_run(runs / "a0", "Hopper-v5", 0, [(0, 1.0), (100, 5.0), (200, 9.0)])
    _write_run(runs / "a1", "Hopper-v5", 1, [(0, 2.0), (100, 7.0), (200, 8.0)])
    _write_run(runs / "b0", "HalfCheetah-v5", 0, [(0, -1.0), (150, 3.0)], prior=[-2.0, 4.0])
    groups = plot_learning.collect([runs])
    assert sorted(groups) == ["HalfCheetah-v5", "HalfCheetah-v5 (prior alone)", "Hopper-v5"]
    assert len(groups["Hopper-v5"]) == 2
    ((steps, prior_means),) = groups["HalfCheetah-v5 (prior alone)"]
    assert steps.tolist() == [0.0, 150.0] and prior_means.tolist() == [-2.0, 4.0]
    out = tmp_path / "learning.png"
    assert plot_learning.main([str(runs), "--out", str(out), "--band", "minmax"]) == 0
    assert imageio.imread(out).shape[2] in (3, 4)
    plot_reliability([0.5, 0.8, 0.9], [0.45, 0.8, 0.93], tmp_path / "rel.png", label="model")
    plot_risk_coverage([1.0, 0.8, 0.5], [0.3, 0.2, 0.1], tmp_path / "rc.png", "epistemic")
    assert (tmp_path / "rel.png").stat().st_size > 0 and (tmp_path / "rc.png").stat().st_size > 0


def _read_events(path):
    """Scalar (tag, step, value) of a TFRecord event file, each record's CRCs checked."""
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c

    data, pos, scalars = path.read_bytes(), 0, []
    while pos < len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[pos + 8 : pos + 12])[0] == masked_crc32c(header)
        body = data[pos + 12 : pos + 12 + length]
        assert struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])[0] == (
            masked_crc32c(body)
        )
        pos += 16 + length
        event = event_pb2.Event.FromString(body)
        scalars += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
    return scalars


def test_tensorboard_sink_writes_readable_events(tmp_path):
    sink = TensorBoardSink(tmp_path)
    sink("train", 100, {"loss": 0.5, "sps": 12.0, "abstain_rate": 0.25})
    sink("episode", 150, {"return": 3.5, "length": 50})
    sink("eval", 200, {"mean": 7.0, "std": 1.0, "returns": [6.0, 8.0]})
    sink("checkpoint", 200, {"env_steps": 200})
    sink.close()
    (event_file,) = list(tmp_path.glob("events.out.tfevents.*"))
    scalars = {(tag, step): value for tag, step, value in _read_events(event_file)}
    assert scalars[("train/loss", 100)] == 0.5 and scalars[("train/abstain_rate", 100)] == 0.25
    assert scalars[("episode/return", 150)] == 3.5 and scalars[("eval/return_mean", 200)] == 7.0


def test_console_sink_shows_abstain_rate_and_eta():
    out = io.StringIO()
    sink = ConsoleSink(1000, enabled=True, desc="x", file=out)
    sink("train", 100, {"sps": 50.0, "abstain_rate": 0.125})
    sink.close()
    assert "abstain=12.5%" in out.getvalue() and "<" in out.getvalue()  # elapsed<remaining
    quiet = io.StringIO()
    sink = ConsoleSink(1000, enabled=False, desc="x", file=quiet)
    sink("eval", 500, {"mean": 1.0, "std": 0.5})
    sink.close()
    assert "ETA" in quiet.getvalue()


# ----------------------------------------------------------------------------- value check
def test_returns_to_go_by_hand():
    from scripts.value_check import compare, returns_to_go

    g = returns_to_go(np.array([1.0, 2.0, 4.0]), 0.5)
    np.testing.assert_allclose(g, [1 + 0.5 * 2 + 0.25 * 4, 2 + 0.5 * 4, 4.0])
    s = compare(np.array([3.0, 2.0, 1.0]), np.array([2.0, 2.0, 2.0]))
    assert s["mean_gap"] == 0.0 and s["correlation"] is None  # constant returns: no correlation
    assert (s["q_start"], s["q_middle"], s["q_end"]) == (3.0, 2.0, 1.0)


def test_value_check_script_matches_the_critic(pm_run, tmp_path, capsys):
    from scripts import value_check

    out = tmp_path / "values.json"
    assert value_check.main([str(pm_run), "--episodes", "1", "--no-plan", "--json", str(out)]) == 0
    assert capsys.readouterr().out.startswith("episode 0 (seed ")
    ep = json.loads(out.read_text())["episodes"][0]
    bundle = load_bundle(pm_run)
    q = bundle.agent.model.q_values(
        bundle.state.params["q"],
        bundle.agent.model.encode(bundle.state.params, np.asarray(ep["obs"][:-1], np.float32)),
        np.asarray(ep["action"], np.float32),
    ).mean(axis=0)
    np.testing.assert_allclose(ep["q"], np.asarray(q), rtol=1e-5, atol=1e-5)
    assert len(ep["return"]) == ep["length"] == len(ep["action"])
    assert value_check.main([str(pm_run), "--episodes", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --episodes")


def test_planner_ablation_acts_under_each_variant(pm_run, tmp_path, capsys):
    """Variants change how the same parameters act; the model's keys cannot be overridden."""
    from scripts import planner_ablation

    out = tmp_path / "ablation.json"
    argv = [str(pm_run), "--variants", "", "planner.ensemble=split planner.horizon=2"]
    assert (
        planner_ablation.main(
            [*argv, "--no-plan-too", "--episodes", "2", "--latency", "3", "--out", str(out)]
        )
        == 0
    )
    rows = json.loads(out.read_text())["variants"]
    assert [r["plan"] for r in rows] == [True, True, False]
    for r in rows:  # each variant's own action was timed: 3 calls after the first
        t = r["act_ms"]
        assert t["repeats"] == 3 and 0 < t["min_ms"] <= t["median_ms"] <= t["max_ms"]
    assert rows[0]["planner"] == load_bundle(pm_run).cfg.section("planner")
    assert rows[1]["planner"]["ensemble"] == "split" and rows[1]["planner"]["horizon"] == 2
    assert all(len(r["returns"]) == 2 for r in rows)
    capsys.readouterr()
    bad = [str(pm_run), "--variants", "model.latent_dim=8", "--out", str(tmp_path / "x.json")]
    assert planner_ablation.main(bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.latent_dim" in err[0] and "planner" in err[0]
    assert evaluate_script.main([str(pm_run), "planner.horizon=0.5", "--episodes", "1"]) == 2
    assert "planner.horizon" in capsys.readouterr().err


# ----------------------------------------------------------------------------- plan check
def test_plan_check_replays_from_a_restored_state():
    """`realised` from a saved (qpos, qvel) gives the rewards the env gave from there."""
    from scripts.plan_check import realised

    env = make_single_env("HalfCheetah-v5")
    env.reset(seed=3)
    qpos, qvel = env.unwrapped.data.qpos.copy(), env.unwrapped.data.qvel.copy()
    acts = np.random.default_rng(0).uniform(-1, 1, size=(6, 6)).astype(np.float32)
    rewards, obs = [], None
    for a in acts:
        obs, r, *_ = env.step(a)
        rewards.append(r)
    disc = 0.9 ** np.arange(6)
    zero = lambda o: np.zeros(6, np.float32)  # noqa: E731
    head = realised(env, qpos, qvel, acts[:4], zero, 0.9, tail=0)
    assert head["G"] == pytest.approx(float(disc[:4] @ rewards[:4]), rel=1e-9)
    assert head["r_H"] == head["G"]
    acts[4:] = 0.0  # the tail acts with `zero`: replay it by hand from the same state
    env.reset(seed=3)
    env.unwrapped.set_state(qpos, qvel)
    by_hand = [env.step(a)[1] for a in acts]
    full = realised(env, qpos, qvel, acts[:4], zero, 0.9, tail=2)
    assert full["G"] == pytest.approx(float(disc @ by_hand), rel=1e-9)
    assert full["r_H"] == pytest.approx(head["G"], rel=1e-9)
    env.close()


def test_plan_check_scores_like_a_python_loop(hc_run):
    """Per head: sum_t g^t alive_t r_t and g^H alive_H mean-Q(z_H, pi(z_H)), stepped by hand."""
    from scripts.plan_check import make_scorer

    bundle = load_bundle(hc_run)
    m, p = bundle.agent.model, bundle.state.params
    z = m.encode(p, np.ones((1, m.obs_dim), np.float32))[0]
    acts = np.random.default_rng(1).uniform(-1, 1, size=(3, 2, m.act_dim)).astype(np.float32)
    key = jax.random.key(4)
    planner_cfg = dataclasses.replace(bundle.agent.planner_cfg, value="mean", uncertainty_coef=1.0)
    got = make_scorer(m, planner_cfg, 0.9)(p, z, acts, key)
    for k in range(m.num_heads):
        zs, ret, alive = np.broadcast_to(z, (3, z.shape[-1])), np.zeros(3), np.ones(3)
        for t in range(2):
            r = np.asarray(m.reward(p, zs, acts[:, t]))
            nxt = m.next_head(p, zs, acts[:, t], k)
            ret = ret + 0.9**t * alive * r
            alive = alive * (1 - np.asarray(m.termination(p, zs, acts[:, t], nxt)))
            zs = nxt
        a_last = m.pi(p, zs, key=key)[2]
        q = np.asarray(m.q_values(p["q"], zs, a_last).mean(axis=0))
        np.testing.assert_allclose(got["reward"][k], ret, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["terminal"][k], 0.81 * alive * q, rtol=1e-5, atol=1e-5)


def test_plan_check_summary_and_script(hc_run, pm_run, tmp_path, capsys):
    from scripts import plan_check

    row = lambda t, kind, pr, pt, g, rr, q: {  # noqa: E731
        "episode": 0, "t": t, "kind": kind, "pred_reward": pr, "pred_terminal": pt,
        "real_G": g, "real_reward": rr, "q_real": q,
    }  # fmt: skip
    rows = [row(0, "prior_mean", 1.0, 5.0, 4.0, 1.5, 6.0), row(0, "planner", 1.0, 7.0, 3.0, 0.5, 4.0),
            row(1, "prior_mean", 1.0, 5.0, 4.0, 1.0, None), row(1, "planner", 2.0, 5.0, 5.0, 2.0, 8.0)]  # fmt: skip
    s = plan_check.summarise(rows, disc_H=0.5)
    assert s["kinds"]["planner"]["pred"] == 7.5 and s["kinds"]["planner"]["real"] == 4.0
    assert s["kinds"]["planner"]["gap_reward"] == pytest.approx(0.25)  # (0.5 + 0) / 2
    assert s["kinds"]["prior_mean"]["q_real_minus_pred"] == pytest.approx(0.5 * 6 - 5)
    assert s["kinds"]["planner"]["q_real_minus_pred"] == pytest.approx((2 - 7 + 4 - 5) / 2)
    assert (s["planner_pred_better"], s["planner_real_better"], s["planner_fooled"]) == (
        1,
        0.5,
        0.5,
    )
    out = tmp_path / "plan.json"
    argv = [str(hc_run), "--episodes", "1", "--every", "4", "--samples", "2", "--tail", "3"]
    assert plan_check.main([*argv, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert len(data["rows"]) == 3 * 4 and data["summary"]["probes"] == 3  # t = 0, 4, 8 of 12
    assert "planner vs prior mean" in capsys.readouterr().out
    assert plan_check.main([str(pm_run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a MuJoCo env" in err[0]
