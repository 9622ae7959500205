"""Bad input through `scripts.train.main` (in-process): each mistake prints exactly one
`error: ...` line on stderr, returns 2 and shows no traceback."""

from pathlib import Path

import pytest

from envs.shifts import parse_shift
from scripts.train import main
from worldmodel.errors import EnvError

# (case id, args, a fragment the error line must contain). TMP is replaced by the test's tmp_path.
CASES = [
    ("unknown_key", ["foo=1"], "unknown config key 'foo'"),
    ("unknown_nested_key", ["train.stepz=10"], "did you mean 'train.steps'"),
    ("unknown_section", ["nosuch.key=1"], "unknown config key 'nosuch'"),
    ("int_from_word", ["train.steps=abc"], "expects int"),
    ("int_from_float", ["train.steps=1.5"], "expects int"),
    ("bool_from_word", ["resume=maybe"], "expects bool"),
    ("float_from_word", ["optim.lr=fast"], "expects float"),
    ("nan_value", ["optim.lr=nan"], "optim.lr"),
    ("section_as_scalar", ["model=3"], "is a section"),
    ("override_without_key", ["=5"], "has no key"),
    ("override_bad_key", ["train.=5"], "malformed key"),
    ("missing_overlay", ["nosuchoverlay"], "unknown config overlay 'nosuchoverlay'"),
    ("bad_yaml", ["TMP/bad.yaml"], "malformed YAML"),
    ("duplicate_yaml_key", ["TMP/dup.yaml"], "duplicate key 'steps'"),
    ("overlay_unknown_key", ["TMP/unk.yaml"], "unknown config key 'train.nope'"),
    ("overlay_not_mapping", ["TMP/list.yaml"], "must be a mapping"),
    ("run_dir_is_file", ["run_dir=TMP/afile"], "cannot use run_dir"),
    ("negative_batch", ["train.batch_size=-1"], "train.batch_size must be >= 1"),
    ("negative_steps", ["train.steps=-5"], "train.steps must be >= 0"),
    ("zero_replay", ["train.replay_capacity=0"], "train.replay_capacity"),
    ("zero_keep", ["checkpoint.keep=0"], "checkpoint.keep"),
    ("zero_horizon", ["train.horizon=0"], "train.horizon"),
    ("negative_seed", ["seed=-1"], "seed must be >= 0"),
    ("zero_log_every", ["log.every=0"], "log.every"),
    ("negative_lr", ["optim.lr=-1"], "optim.lr must be > 0"),
    ("discount_above_one", ["loss.discount=1.5"], "loss.discount"),
    ("negative_coef", ["loss.reward_coef=-1"], "loss.reward_coef"),
    ("zero_hidden", ["model.hidden_dim=0"], "model.hidden_dim"),
    ("one_bin", ["model.num_bins=1"], "model.num_bins"),
    ("vmin_above_vmax", ["model.vmin=10", "model.vmax=-10"], "model.vmin"),
    ("one_head", ["model.num_heads=1"], "num_heads"),
    ("latent_not_divisible", ["model.latent_dim=15"], "divisible"),
    ("zero_planner_horizon", ["planner.horizon=0"], "planner.horizon"),
    ("too_many_elites", ["planner.num_elites=100"], "num_elites"),
    ("bad_ensemble_mode", ["planner.ensemble=bogus"], "planner.ensemble"),
    ("bad_abstain_alpha", ["abstain.alpha=2"], "abstain.alpha"),
    ("bad_abstain_score", ["abstain.score=bogus"], "abstain.score"),
    ("unknown_env", ["env.id=NoSuchEnv-v0"], "unknown environment id"),
    ("unknown_env_version", ["env.id=Ant-v99"], "did you mean"),
    ("discrete_actions", ["env.id=CartPole-v1"], "continuous Box"),
    ("zero_envs", ["env.num_envs=0"], "num_envs"),
    ("zero_action_repeat", ["env.action_repeat=0"], "action_repeat"),
]

_FILES = {
    "bad.yaml": "train: {steps: 5\n",
    "dup.yaml": "train:\n  steps: 5\n  steps: 6\n",
    "unk.yaml": "train:\n  nope: 5\n",
    "list.yaml": "- 1\n- 2\n",
    "afile": "not a folder",
}


def _run(args, capsys):
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    return code, lines


def _assert_one_error(code, lines, fragment):
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(("args", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_command_line(args, fragment, tmp_path, capsys):
    for name, text in _FILES.items():
        (tmp_path / name).write_text(text)
    args = [a.replace("TMP", str(tmp_path)) for a in args]
    if not any(a.startswith("run_dir=") for a in args):
        args.append(f"run_dir={tmp_path / 'run'}")
    _assert_one_error(*_run(["debug", "eval.every=0", *args], capsys), fragment)


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "mass"},  # no severity
        {"kind": "nosuchshift", "severity": 1.0},
        {"kind": "mass", "severity": 1.0, "colour": "red"},
        "mass",
    ],
)
def test_bad_shift_spec_is_one_line(spec):
    with pytest.raises(EnvError) as excinfo:
        parse_shift(spec)
    assert "\n" not in str(excinfo.value)


def test_checkpoint_of_another_model_size(tmp_path, capsys):
    run = [f"run_dir={tmp_path}", "eval.every=0", "train.steps=1", "train.seed_steps=10"]
    assert _run(["debug", *run], capsys)[0] == 0
    code, lines = _run(["debug", *run, "model.hidden_dim=48"], capsys)
    _assert_one_error(code, lines, "was made with another model config")


def test_all_checkpoints_corrupt(tmp_path, capsys):
    run = [f"run_dir={tmp_path}", "eval.every=0", "train.steps=1", "train.seed_steps=10"]
    assert _run(["debug", *run], capsys)[0] == 0
    npz = next(Path(tmp_path, "checkpoints", "replay").glob("*.npz"))
    npz.write_bytes(npz.read_bytes()[:-10])
    code, lines = _run(["debug", *run, "train.steps=2"], capsys)
    assert code == 2 and lines[-1].startswith("error: ") and "every checkpoint" in lines[-1]
    assert lines[0].startswith("warning: ") and str(npz) in lines[0]  # the file is named


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    args = ["debug", f"run_dir={tmp_path}", "eval.every=0", "train.steps=200"]
    code, lines = _run([*args, "checkpoint.every=50", "optim.lr=1e30"], capsys)
    _assert_one_error(code, lines, "training diverged at env step 100")
    assert "checkpoint (step 50) is kept" in lines[0]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["50", "replay"]
