"""benchmarks/bench_pipeline.py --quick as a smoke test: every run of the ablation starts, trains
under horovodrun -np 2 and reports its curve; the JSON has the figures the issue asks for. No
timing is asserted (timings belong to the benchmark, not to tests)."""

import json

import pytest

from hvdrun import quick_bench


@pytest.mark.horovod
def test_bench_pipeline_quick(tmp_path):
    res = quick_bench("bench_pipeline.py", str(tmp_path))
    runs = res["runs"]
    assert {"keras_fit", "keras_fit_mwms", "baseline", "pipeline", "prune_early"} <= set(runs)
    assert "prune_soft" in runs
    for name, row in runs.items():
        assert 0.0 < row["final_acc"] <= 1.0, name
        assert row["images_per_s"] > 0 and row["train_s"] > 0, name
        assert {"reached_0.90", "s_to_0.90"} <= set(row), name
    assert set(res["stage_effects"]) >= {"im2col", "lsg", "prune_early", "features_paper"}
    assert 0.2 < runs["prune_early"]["flops_saved"] < 0.7
    assert runs["pipeline"]["train_tflop"] < runs["baseline"]["train_tflop"]
    assert (tmp_path / "time_to_accuracy.png").stat().st_size > 0


def test_compare_puts_the_run_beside_the_benchmark(tmp_path, capsys):
    from iapdcnn.training import compare

    report = {"time_to_accuracy": {"0.90": 70.0, "0.91": None}, "test_accuracy": 0.9212}
    bench = {
        "seeds": [0, 1, 2],
        "runs": {
            "baseline": {"final_acc": 0.923, "s_to_0.90": 75.0, "s_to_0.90_sd": 2.5},
            "slow": {"final_acc": 0.899, "s_to_0.90": None, "reached_0.90": "1/3"},
        },
        "ratio_to_0.90": 1.05,
    }
    out = compare.lines(report, bench)
    assert out[0] == "this run: 0.90 after 70.0 s, 0.91 not reached; final test accuracy 0.9212"
    assert out[1] == (
        "bench_pipeline baseline (mean of 3 seeds): 0.90 after 75.0 s (sd 2.5); final 0.9230 "
        "(sd 0.0000)"
    )
    assert out[2] == (
        "bench_pipeline slow (mean of 3 seeds): 0.90 not reached by every seed (1/3); final 0.8990 "
        "(sd 0.0000)"
    )
    assert "1.05x the baseline's time to 0.90" in out[3]
    (tmp_path / "r.json").write_text(json.dumps(report))
    assert compare.main([str(tmp_path / "r.json"), str(tmp_path / "missing.json")]) == 1
    assert "cannot read" in capsys.readouterr().err
