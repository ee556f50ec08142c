"""LSG and the other reductions under real Horovod workers (Gloo): no outlier == Average, an
outlier or NaN worker is excluded, a sign-flipped worker is caught by the direction screen,
all-rejected steps are skipped and logged, K = 2 per spec §3, the tape and Keras ways in. The checks themselves live in distributed/reduction_worker.py."""

import os

import pytest

from hvdrun import ROOT, run_hvd

WORKER = os.path.join(ROOT, "tests", "distributed", "reduction_worker.py")


@pytest.mark.horovod
@pytest.mark.parametrize("np_", [2, 4])
def test_reductions_under_horovod(np_):
    p = run_hvd(np_, [WORKER], timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    for r in range(np_):
        assert f"RANK {r} OK" in out  # every rank reached the end of its checks
    # what the reduction itself reported for an all-rejected step
    assert "all-rejected step: workers_kept=0.0 skipped=1.0 iterations=0" in out, out[-3000:]
    if np_ >= 3:  # the direction screen's case: the flipped worker is dropped for good
        line = next(ln for ln in out.splitlines() if "flipped worker weights:" in ln)
        weights = [float(w) for w in line.split("flipped worker weights:")[1].split()]
        assert len(weights) > 5 and weights[0] > 0 and all(w == 0 for w in weights[5:]), weights
