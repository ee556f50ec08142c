"""benchmarks/bench_pipeline.py --quick as a smoke test: every run of the ablation starts, trains
under horovodrun -np 2 and reports its curve; the JSON has the figures the issue asks for. No
timing is asserted (timings belong to the benchmark, not to tests)."""

import json
import os
import subprocess
import sys

import pytest

from hvdrun import ROOT, child_env, horovodrun_path


@pytest.mark.horovod
def test_bench_pipeline_quick(tmp_path):
    horovodrun_path()  # fails clearly when Horovod is missing
    p = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "bench_pipeline.py"),
            "--quick",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=child_env(),
        cwd=ROOT,
    )
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    runs = res["runs"]
    assert {"keras_fit", "baseline", "pipeline", "prune_early", "prune_soft"} <= set(runs)
    for name, row in runs.items():
        assert 0.0 < row["final_acc"] <= 1.0, name
        assert row["images_per_s"] > 0 and row["train_s"] > 0, name
        assert {"reached_0.90", "s_to_0.90"} <= set(row), name
    assert set(res["stage_effects"]) >= {"im2col", "lsg", "prune_early", "features_paper"}
    assert 0.2 < runs["prune_early"]["flops_saved"] < 0.7
    assert runs["pipeline"]["train_tflop"] < runs["baseline"]["train_tflop"]
    assert (tmp_path / "time_to_accuracy.png").stat().st_size > 0
