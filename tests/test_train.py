"""The trainer (train.py -> iapdcnn.training): bad flags get clear errors, a short run under
`horovodrun -np 2` works end to end with a NaN-injecting rank, and a run killed mid-epoch and
resumed ends with exactly the weights of an uninterrupted run (deterministic mode)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hvdrun import ROOT, child_env, run_hvd

TRAIN = os.path.join(ROOT, "train.py")
TINY = [
    "--dataset",
    "synthetic",
    "--width",
    "4",
    "--batch-size",
    "16",
    "--threads",
    "1",
    "--no-progress",
]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--inject-fault", "1:bogus"], "KIND must be one of"),
        (["--inject-fault", "x:nan"], "must be integers"),
        (["--inject-fault", "1"], "RANK:KIND"),
        (["--prune", "1.5"], "--prune is a ratio"),
        (["--fci-epsilon", "0.7"], "--fci-epsilon must be in [0, 0.5]"),
        (["--reduction", "avg"], "invalid choice"),
        (["--reduction", "mean", "--tau", "1"], "--tau applies to --reduction lsg"),
        (["--dataset", "cifar10"], "needs --data-path"),
        (["--kappa", "0"], "--kappa must be > 0"),
        (["--se-kappa", "-1"], "--se-kappa must be > 0"),
        (["--lr-schedule", "linear"], "argument --lr-schedule: invalid choice"),
        (["--prune-at", "1.2"], "--prune-at is a fraction of the run's steps in [0, 1)"),
        (
            ["--prune-mode", "soft", "--prune-at", "0.7", "--prune-end", "0.5"],
            "--prune-at (0.7) must come before --prune-end (0.5)",
        ),
        (["--eval-every", "0"], "--eval-every must be >= 1"),
        (["--targets", "0.9,x"], "--targets wants numbers"),
        (["--targets", "1.5"], "--targets must be accuracies in (0, 1]"),
        (["--fci-drop", "1.0"], "--fci-drop is a fraction in [0, 1)"),
        (["--features-mode", "stack"], "invalid choice"),
        (["--features", "--features-mode", "channels"], "exclude each other"),
        (["--straggler-seconds", "-1"], "--straggler-seconds must be in [0, 3600], got -1.0"),
        (["--straggler-seconds", "nan"], "--straggler-seconds must be in [0, 3600], got nan"),
    ],
)
def test_bad_flags(argv, needle, capsys):
    from iapdcnn.training import parse_args

    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_each_rank_gets_one_gpu(monkeypatch):
    """Horovod's recipe: the local rank picks its GPU (round robin beyond the GPUs) and only
    that one is visible, with memory growth; without a GPU nothing is touched."""
    import collections

    import tensorflow as tf

    from iapdcnn.training import pin_gpu

    Dev = collections.namedtuple("Dev", "name device_type")
    gpus = [Dev(f"/physical_device:GPU:{i}", "GPU") for i in range(2)]
    calls = []
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: list(gpus))
    monkeypatch.setattr(tf.config, "set_visible_devices", lambda d, k: calls.append(("vis", d, k)))
    monkeypatch.setattr(
        tf.config.experimental, "set_memory_growth", lambda d, on: calls.append(("grow", d, on))
    )
    assert pin_gpu(3) == "/physical_device:GPU:1"
    assert calls == [("vis", gpus[1], "GPU"), ("grow", gpus[1], True)]
    gpus.clear()
    calls.clear()
    assert pin_gpu(0) is None and calls == []


def test_config_errors_name_the_flag():
    from iapdcnn.training import ConfigError, TrainConfig

    assert TrainConfig().check() == TrainConfig()
    for kwargs, needle in [
        (dict(batch_size=0), "--batch-size must be >= 1"),
        (dict(lr=-1.0), "--lr must be > 0"),
        (dict(reduction="avg"), "--reduction must be one of"),
        (dict(dataset="tfrecord"), "--dataset tfrecord needs --data-path"),
        (dict(steps_per_epoch=0), "--steps-per-epoch must be >= 1"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            TrainConfig(**kwargs).check()


def test_reduction_options_follow_the_reduction():
    from iapdcnn.distributed import make_reduction
    from iapdcnn.training import TrainConfig

    for name in ("mean", "lsg", "dis_cnn", "median", "trimmed_mean"):
        red = make_reduction(name, **TrainConfig(reduction=name).reduction_options())
        assert red.name == name
    assert TrainConfig(reduction="lsg", se_kappa=3.0).reduction_options()["se_kappa"] == 3.0


@pytest.mark.parametrize(
    "decay, expected",
    [
        # warm-up 0.1 -> 0.4 over 10 steps, then the decay over steps 10..100
        ("constant", [0.1, 0.25, 0.4, 0.4, 0.4, 0.4]),
        ("cosine", [0.1, 0.25, 0.4, 0.2, 0.0, 0.0]),
        ("step", [0.1, 0.25, 0.4, 0.04, 0.004, 0.004]),
    ],
)
def test_lr_schedules(decay, expected):
    from iapdcnn.training.schedules import WarmupDecay

    s = WarmupDecay(0.1, 4, 10, total_steps=100, decay=decay)
    got = [round(float(s(k)), 6) for k in (0, 5, 10, 55, 100, 150)]
    assert got == pytest.approx(expected, abs=1e-6)
    again = WarmupDecay.from_config(s.get_config())
    assert float(again(55)) == pytest.approx(float(s(55)))
    with pytest.raises(ValueError, match="--lr-schedule"):
        WarmupDecay(0.1, 4, 10, 100, decay="linear")


def test_flag_lists_match_the_package():
    from iapdcnn import distributed, pruning
    from iapdcnn.training import config, schedules

    assert config.REDUCTIONS == distributed.REDUCTIONS
    assert set(config.PRUNE_CRITERIA) == set(pruning.CRITERIA)
    assert schedules.SCHEDULES is config.SCHEDULES


def test_unreachable_prune_target_names_the_flags(tmp_path):
    argv = [*TINY, "--prune", "0.3", "--prune-at", "0.5", "--steps-per-epoch", "4"]
    p = subprocess.run(
        [sys.executable, TRAIN, *argv, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env(),
    )
    assert p.returncode != 0
    assert "--prune 0.3 with --prune-round-to 8" in p.stderr and "cannot be reached" in p.stderr


def test_odd_batch_that_would_crash_tensorflow_is_refused(tmp_path):
    # TF 2.21's oneDNN gradients of strided convs abort the process on odd batches of narrow
    # layers (docs/known_issues.md): --conv keras with an odd --batch-size is refused, naming it
    from iapdcnn.training import TrainConfig
    from iapdcnn.training.build import check_odd_batch, odd_batch_crashes

    cfg = TrainConfig(conv="keras", batch_size=33)
    assert odd_batch_crashes(cfg, {}) and not odd_batch_crashes(cfg, {"TF_ENABLE_ONEDNN_OPTS": "0"})
    assert not odd_batch_crashes(TrainConfig(conv="im2col", batch_size=33), {})
    check_odd_batch(TrainConfig(conv="keras", batch_size=32), {})
    check_odd_batch(TrainConfig(conv="im2col", batch_size=33), {})
    argv = [*TINY, "--conv", "keras", "--batch-size", "33", "--steps-per-epoch", "2"]
    env = {k: v for k, v in child_env().items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    p = subprocess.run(
        [sys.executable, TRAIN, *argv, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert p.returncode == 1, p.stderr[-2000:]  # a clean exit with the message, not an abort
    assert "--batch-size 33 is odd" in p.stderr and "--conv im2col" in p.stderr


def test_fault_on_a_missing_rank_is_refused(tmp_path):
    p = subprocess.run(
        [sys.executable, TRAIN, *TINY, "--inject-fault", "3:nan", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env(),
    )
    assert p.returncode != 0
    assert "--inject-fault rank 3 does not exist (world size 1)" in p.stderr


@pytest.mark.parametrize(
    "flag",
    [
        ["--conv", "im2col"],
        ["--features"],
        ["--prune", "0.3", "--prune-round-to", "1"],
        ["--features-mode", "channels", "--fci-drop", "0.2"],
    ],
    ids=["im2col", "features", "prune", "features-once"],
)
def test_component_flags_run_end_to_end(flag, tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            TRAIN,
            *TINY,
            "--epochs",
            "2",
            "--steps-per-epoch",
            "8",
            *flag,
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env(),
    )
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert np.isfinite(report["test_accuracy"]) and np.isfinite(report["history"][-1]["loss"])
    # the report says the flag's stage ran, in the form asked
    stages = report["stages"]
    if flag[0] == "--conv":
        assert stages["conv"]["op"] == "im2col"
    if flag[0] == "--features":
        assert stages["features"]["form"] == "in the model, every step"
    if flag[0] == "--features-mode":
        assert stages["features"]["form"] == "computed once: channels"
        assert stages["features"]["train_kept"] < stages["features"]["train_in"]
    if flag[0] == "--prune":
        # soft masks during training, then strip(): the model really got smaller
        assert report["flops_after"] < 0.85 * report["flops_before"], report


@pytest.mark.horovod
def test_end_to_end_np2_with_nan_rank(tmp_path):
    out = tmp_path / "run"
    p = run_hvd(
        2,
        [
            TRAIN,
            *TINY,
            "--epochs",
            "2",
            "--steps-per-epoch",
            "6",
            "--inject-fault",
            "1:nan:2",
            "--step-log",
            "--out",
            str(out),
        ],
    )
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert "test_accuracy=" in p.stdout
    hist = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    # steps 0-1 keep both workers, from step 2 on rank 1's NaN gradients are rejected
    assert hist[0]["workers_kept_mean"] == pytest.approx((2 * 2 + 4 * 1) / 6)
    assert hist[1]["workers_kept_mean"] == 1.0
    rep = json.loads((out / "report.json").read_text())
    assert np.isfinite(rep["test_loss"]) and rep["ranks"] == 2
    assert (out / "curves.png").stat().st_size > 0 and (out / "checkpoint.npz").exists()
    assert any((out / "tb").iterdir())
    # --step-log: every step's per-worker scalars and LAW weights, rank 1 dropped from step 2
    lines = (out / "steps.jsonl").read_text().splitlines()
    # strict JSON (no NaN tokens): rank 1's NaN gradient norm from step 2 on is written as null
    steps = [json.loads(line, parse_constant=pytest.fail) for line in lines]
    assert steps[2]["norm"][1] is None and steps[2]["norm"][0] is not None
    assert [s["step"] for s in steps] == list(range(12))
    assert [s["law"] for s in steps[:3]] == [[1, 1], [1, 1], [1, 0]]
    assert all(se > 0 for s in steps[:2] for se in s["loss_se"])


def _weights(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "meta"}


@pytest.mark.horovod
def test_kill_and_resume_is_exact(tmp_path):
    common = [
        *TINY,
        "--epochs",
        "3",
        "--steps-per-epoch",
        "5",
        "--deterministic",
        "--inject-fault",
        "1:labels:3",
    ]
    a, b = tmp_path / "a", tmp_path / "b"
    p = run_hvd(2, [TRAIN, *common, "--out", str(a)])
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    p = run_hvd(2, [TRAIN, *common, "--out", str(b), "--inject-fault", "1:crash:7"], check=False)
    assert p.returncode != 0 and "rank 1: crash fault at step 7" in p.stdout
    assert json.loads((b / "metrics.json").read_text())[-1]["epoch"] == 1
    p = run_hvd(2, [TRAIN, *common, "--out", str(b), "--resume"])
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert "resumed from" in p.stdout
    wa, wb = _weights(a / "checkpoint.npz"), _weights(b / "checkpoint.npz")
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    ha = json.loads((a / "metrics.json").read_text())
    hb = json.loads((b / "metrics.json").read_text())
    assert [h["val_acc"] for h in ha] == [h["val_acc"] for h in hb]


def test_early_pruning_cuts_once_and_resumes_exactly(tmp_path):
    common = [
        *TINY,
        "--epochs",
        "3",
        "--steps-per-epoch",
        "5",
        "--deterministic",
        "--prune",
        "0.3",
        "--prune-round-to",
        "1",  # width 4: multiples of 8 cannot reach 30%
        "--prune-at",
        "0.2",  # step 3, in the first epoch
        "--eval-every",
        "2",
    ]

    def run(out, *extra):
        return subprocess.run(
            [sys.executable, TRAIN, *common, "--out", str(out), *extra],
            capture_output=True,
            text=True,
            timeout=300,
            env=child_env(),
        )

    a, b = tmp_path / "a", tmp_path / "b"
    p = run(a)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert p.stdout.count("pruned to") == 1
    rep = json.loads((a / "report.json").read_text())
    assert 0.2 < rep["flops_saved"] < 0.6, rep["flops_saved"]
    # every epoch after the cut trains the smaller model; the curve has the mid-epoch points
    assert [h["mflops"] < rep["flops_before"] / 1e6 for h in rep["history"]] == [True] * 3
    assert [e["step"] for e in rep["evals"]] == [2, 4, 5, 6, 8, 10, 12, 14, 15]
    assert all(
        e2["train_s"] >= e1["train_s"]
        for e1, e2 in zip(rep["evals"], rep["evals"][1:], strict=False)
    )
    assert set(rep["time_to_accuracy"]) == {"0.88", "0.90", "0.91"}
    p = run(b, "--inject-fault", "0:crash:7")
    assert p.returncode != 0 and "rank 0: crash fault at step 7" in p.stdout
    p = run(b, "--resume")
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert "pruned to" not in p.stdout  # the checkpoint's cut is re-applied, not re-selected
    wa, wb = _weights(a / "checkpoint.npz"), _weights(b / "checkpoint.npz")
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
