"""benchmarks/bench_seeds.py --quick as a smoke test: its reference checks pass, every run of the
related systems' strategies trains (under horovodrun -np 2, one process, and tf.distribute) and
reports what the summary needs. No timing is asserted (timings belong to the benchmark)."""

import pytest

from hvdrun import quick_bench, run_bench


@pytest.mark.horovod
def test_bench_seeds_quick(tmp_path):
    res = quick_bench("bench_seeds.py", str(tmp_path))
    check = res["correctness"]
    assert check["cgmse_iterations"] < check["gd_iterations"]
    names = {"base", "cgmse", "kmeans", "agwu", "slow", "slow_balance", "slow_agwu", "tfd"}
    names |= {"seq", "seq_all"}
    assert set(res["runs"]) == names == set(res["summary"])
    for name, (run,) in res["runs"].items():
        busy = run["step_seconds_per_rank"]
        assert len(busy["wall"]) == (1 if name.startswith("seq") else 2), name
        assert 0.0 < run["test_accuracy"] <= 1.0 and run["train_s"] > 0, name
        assert {"s_to_0.80", "reached_0.80"} <= set(res["summary"][name]), name
    # the slow rank computes longer than the healthy one, which waits for it
    slow = res["runs"]["slow"][0]["step_seconds_per_rank"]
    assert slow["cpu"][1] > slow["cpu"][0] and slow["idle"][0] > slow["idle"][1], slow
    assert res["runs"]["slow_balance"][0]["balance_sizes"]
    agwu, base = res["summary"]["agwu"], res["summary"]["base"]
    assert agwu["allreduced_mb_per_rank"][0] < base["allreduced_mb_per_rank"][0]
    assert float(res["slow_seconds_per_step"]["0"]) > 0
    assert set(res["ratios"]) >= {"speedup_2_ranks_over_seq", "slow_balance_train_s_over_slow"}
    assert res["ratios"]["agwu_allreduced_mb_over_base"][0] < 1


def test_bench_seeds_refuses_runs_it_does_not_know():
    p = run_bench("bench_seeds.py", "--only", "cgmse", timeout=120)
    assert p.returncode == 2 and "--only: runs are base, cgmse" in p.stderr, p.stderr[-2000:]
