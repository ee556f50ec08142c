"""LSG and the other reductions under real Horovod workers (Gloo): no outlier == Average, an
outlier or NaN worker is excluded, a sign-flipped worker is caught by the direction screen,
all-rejected steps are skipped and logged, K = 2 per SPEC 3, the tape and Keras ways in. The checks themselves live in distributed/reduction_worker.py."""

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
        assert f"RANK {r} OK" in out
    assert "skipped step logged" in out
    if np_ >= 3:  # the direction screen's case (section 9)
        assert "sign flip rejected from step" in out
