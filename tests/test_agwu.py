"""--sync agwu (BPT-CNN's outer-layer parallelism as local SGD with accuracy-weighted merges):
the merge weights, the merge under horovodrun against NumPy, and the trainer end to end."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from hvdrun import ROOT, run_hvd
from iapdcnn.distributed.agwu import agwu_weights

TRAIN = os.path.join(ROOT, "train.py")


def test_agwu_weights():
    np.testing.assert_allclose(agwu_weights([0.8, 0.6, 0.6]), [0.4, 0.3, 0.3])
    np.testing.assert_allclose(agwu_weights([0.5, np.nan, -1.0, np.inf]), [1, 0, 0, 0])
    np.testing.assert_array_equal(agwu_weights([0.0, np.nan]), [0, 0])


@pytest.mark.horovod
def test_merge_under_horovod():
    p = run_hvd(3, [os.path.join(ROOT, "tests", "distributed", "agwu_worker.py")], timeout=300)
    out = p.stdout + p.stderr
    for r in range(3):
        assert f"RANK {r} merged weights 0.3750 0.3333 0.2917" in out, out[-3000:]


@pytest.mark.horovod
def test_trainer_agwu_end_to_end(tmp_path):
    common = ["--dataset", "synthetic", "--width", "4", "--batch-size", "16", "--threads", "1"]
    common += ["--no-progress", "--epochs", "2", "--steps-per-epoch", "6", "--eval-every", "4"]
    p = run_hvd(2, [TRAIN, *common, "--sync", "agwu", "--local-steps", "4", "--out", str(tmp_path)])
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    rep = json.loads((tmp_path / "report.json").read_text())
    sync = rep["stages"]["sync"]
    # merges every 4 steps, before each evaluation (steps 4, 8) and at each epoch's end (6, 12)
    assert sync["mode"] == "agwu" and sync["merges"] == 4, sync
    assert np.isfinite(rep["test_accuracy"])
    p = run_hvd(2, [TRAIN, *common, "--out", str(tmp_path / "step")])
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    step = json.loads((tmp_path / "step" / "report.json").read_text())["stages"]["sync"]
    # 12 gradient allreduces against 4 merges of the weights, BatchNorm statistics and momentum
    assert step["mode"] == "step"
    assert 0 < sync["allreduced_mb_per_rank"] < step["allreduced_mb_per_rank"], (sync, step)
