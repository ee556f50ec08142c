"""--balance (LBRLA / IDPA): the batch sizes for given speeds, the gradient weights that keep the
reduced gradient the mean over the global batch, and a straggler under horovodrun getting less."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from hvdrun import ROOT, run_hvd
from iapdcnn.training.balance import Balancer, batch_sizes

TRAIN = os.path.join(ROOT, "train.py")


def test_batch_sizes_follow_the_speeds():
    assert batch_sizes([1.0, 1.0, 2.0], 64) == [16, 16, 32]
    assert batch_sizes([1.0, 2.0], 128) == [43, 85]  # 42.67 / 85.33, the larger remainder first
    assert sum(batch_sizes([3.0, 1.0, 1.0, 0.5], 100, min_batch=4)) == 100
    assert batch_sizes([1.0, np.nan, 0.0], 30) == [10, 10, 10]  # unknown speeds count as slowest
    assert batch_sizes([1000.0, 1.0], 64, min_batch=8)[1] == 8
    # even batches where odd ones crash TensorFlow's oneDNN conv gradients (--conv keras on CPU)
    assert batch_sizes([1.0, 2.0], 128, multiple=2) == [44, 84]
    assert batch_sizes([1000.0, 1.0], 64, min_batch=7, multiple=2) == [56, 8]
    with pytest.raises(ValueError, match="not a multiple of 2"):
        batch_sizes([1.0, 1.0], 63, multiple=2)
    with pytest.raises(ValueError, match="cannot give"):
        batch_sizes([1.0, 1.0], 3, min_batch=2)


def test_weights_keep_the_global_mean():
    # rank k's weighted gradient averaged over ranks is sum_k b_k g_k / B
    costs = [0.002, 0.001]  # seconds per sample: rank 0 is 2x slower

    class FakeHvd:
        def allgather(self, t, name=None):
            return tf.constant(costs, tf.float64)

    bals = [Balancer(2, r, 64, every=1, hvd=FakeHvd()) for r in range(2)]
    for b in bals:
        b.record(0.1, 64)
        assert b.maybe_update(0)
    sizes = bals[0].sizes
    assert sizes == bals[1].sizes and sum(sizes) == 128 and sizes[0] < sizes[1]
    assert [b.offset for b in bals] == [0, sizes[0]]
    g = [np.array([1.0, 2.0]), np.array([5.0, -1.0])]
    average = sum(b.weight * gk for b, gk in zip(bals, g, strict=True)) / 2
    np.testing.assert_allclose(average, (sizes[0] * g[0] + sizes[1] * g[1]) / 128)


def test_balance_needs_step_sync():
    from iapdcnn.training import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match="--balance"):
        TrainConfig(balance=True, sync="agwu").check()
    with pytest.raises(ConfigError, match="--balance-every"):
        TrainConfig(balance=True, balance_every=0).check()


def test_slow_fault_delay_follows_the_batch(monkeypatch):
    """``slow`` is a slower machine: its busy wait is --straggler-seconds per --batch-size
    samples, so a smaller batch costs it less; ``straggler`` is a fixed wait a step."""
    from iapdcnn.training import faults as F

    waits = []
    monkeypatch.setattr(F, "_busy", waits.append)
    x, y = np.zeros((16, 2, 2, 1), np.float32), np.zeros(16, np.int64)
    for kind in ("slow", "straggler"):
        inj = F.FaultInjector([F.parse_fault(f"1:{kind}:3")], 1, 2, 0, 0.2, batch_size=32)
        inj.batch(x, y, 2)  # before its first step: healthy
        inj.batch(x, y, 3)
        inj.batch(x[:8], y[:8], 4)
        healthy = F.FaultInjector([F.parse_fault(f"1:{kind}")], 0, 2, 0, 0.2, batch_size=32)
        healthy.batch(x, y, 5)
    assert waits == [0.1, 0.05, 0.2, 0.2]


@pytest.mark.horovod
def test_slow_rank_gets_a_smaller_share(tmp_path):
    args = ["--dataset", "synthetic", "--width", "4", "--batch-size", "32", "--threads", "1"]
    args += ["--no-progress", "--epochs", "1", "--steps-per-epoch", "30", "--balance"]
    args += ["--balance-every", "10", "--inject-fault", "1:slow", "--straggler-seconds"]
    args += ["0.05", "--out", str(tmp_path)]
    p = run_hvd(2, [TRAIN, *args], timeout=300)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    rep = json.loads((tmp_path / "report.json").read_text())
    sizes = rep["stages"]["balance"]["sizes"]
    assert sum(sizes) == 64 and sizes[1] < sizes[0], sizes
    assert np.isfinite(rep["test_accuracy"])
    assert "balanced batches" in p.stdout
    # each rank's step time: the slow rank computes longer, rank 0 waits for it
    busy = rep["step_seconds_per_rank"]
    assert all(len(busy[k]) == 2 for k in ("wall", "cpu", "idle"))
    assert busy["cpu"][1] > busy["cpu"][0] and busy["idle"][0] > 0, busy
    assert np.allclose(np.subtract(busy["wall"], busy["cpu"]), busy["idle"], atol=2e-3)
