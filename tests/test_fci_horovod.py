"""FCI prototype statistics merged across `horovodrun -np 2` equal the single-process ones
exactly (spec §1c: class sums are the "reduce" step), and the preprocessing job runs under
horovodrun. Needs Horovod's horovodrun; skipped with the reason when it is absent."""

import json
import os

import numpy as np
import pytest

from hvdrun import run_hvd
from iapdcnn.data import synthetic
from iapdcnn.layers import FCIFilter

HERE = os.path.dirname(os.path.abspath(__file__))
pytestmark = pytest.mark.horovod


def _horovodrun(args: list[str], timeout: int = 300) -> None:
    run_hvd(2, args, timeout=timeout)


@pytest.mark.parametrize("mode", ["prototype", "pairwise"])
def test_merged_stats_equal_single_process(tmp_path, mode):
    out = tmp_path / "merged.npz"
    _horovodrun([os.path.join(HERE, "distributed", "fci_merge_worker.py"), str(out), mode])
    merged = np.load(out)
    assert int(merged["size"]) == 2
    x, y = synthetic(n=300, shape=(20, 20, 1), classes=3, seed=3)
    single = FCIFilter(block_size=4, epsilon=0.1, mode=mode).adapt((x, y), batch_size=32)
    np.testing.assert_array_equal(merged["counts"], single.counts.numpy())
    np.testing.assert_array_equal(merged["sums"], single.sums.numpy())  # exactly
    if mode == "prototype":
        # same prototypes, so the same per-sample FCI; only their float64 sum order differs
        np.testing.assert_allclose(merged["position_fci"], single.position_fci.numpy(), atol=1e-6)
        np.testing.assert_array_equal(merged["mask"], single.mask.numpy())
        assert 0 < single.mask.numpy().sum() < single.positions  # a mask that screens


def test_preprocess_job_under_horovodrun(tmp_path):
    out = tmp_path / "pfes"
    args = [
        "-m",
        "iapdcnn.preprocess",
        "--dataset",
        "synthetic",
        "--out",
        str(out),
        "--search-radius",
        "1",
        "--shard-size",
        "100",
        "--no-progress",
    ]
    _horovodrun(args)
    report = json.loads((out / "report.json").read_text())
    assert report["ranks"] == 2 and report["images_in"] == 512
    shards = sorted(p.name for p in out.glob("*.tfrecord"))
    assert len(shards) == 6 and any("-r001-" in s for s in shards)
