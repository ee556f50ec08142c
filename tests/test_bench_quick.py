"""Quick runs of the fast benchmarks that no other test starts, so that one that stops running is
caught here and not by the next person who runs it: bench_features once failed on a changed
synthetic() signature and nobody saw. Each must exit 0 and print its JSON line with its main
figures. No timing is asserted (timings belong to the benchmarks)."""

import json

import pytest

from hvdrun import run_bench


@pytest.mark.parametrize(
    ("script", "keys"),
    [
        ("bench_features.py", {"vs_opencv_224", "vs_skimage_224", "fci_blocks_per_s"}),
        ("bench_export.py", {"flops_ratio", "max_abs_diff_exported", "latency_ratio_wall_b64"}),
    ],
)
def test_quick_benchmark_runs(script, keys):
    p = run_bench(script, "--quick", timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert keys <= set(res), sorted(res)
