"""The preprocessing job and the CLI (spec §1): sharded TFRecords in iapdcnn's schema, the JSON
report, resuming, atomic shards, the preview PNG. Small synthetic data, small windows."""

import json

import numpy as np
import pytest
import tensorflow as tf

from iapdcnn import cli
from iapdcnn.data import synthetic
from iapdcnn.preprocess import main

ARGS = ["--dataset", "synthetic", "--search-radius", "1", "--shard-size", "200", "--no-progress"]


def _parse(rec):
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "shape": tf.io.FixedLenFeature([3], tf.int64),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }
    ex = tf.io.parse_single_example(rec, spec)
    return tf.reshape(tf.io.decode_raw(ex["image"], tf.float32), ex["shape"]), ex["label"]


def test_job_writes_shards_report_and_preview(tmp_path):
    out = tmp_path / "pfes"
    assert (
        cli.main(["preprocess", *ARGS, "--out", str(out), "--preview", str(tmp_path / "p.png")])
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["images_in"] == 512 and report["images_out"] == 512 and report["shards"] == 3
    assert set(report["blocks_kept_per_class"]) == {str(k) for k in range(10)}
    assert sum(report["blocks_per_class"].values()) == 512 * report["positions"]
    assert report["time_s"] > 0 and report["images_per_s"] > 0
    assert (tmp_path / "p.png").stat().st_size > 1000
    files = sorted(str(p) for p in out.glob("*.tfrecord"))
    ims, labels = zip(*tf.data.TFRecordDataset(files).map(_parse).as_numpy_iterator(), strict=True)
    assert len(ims) == 512 and ims[0].shape == (28, 28, 1)
    np.testing.assert_array_equal(labels, synthetic()[1])  # order kept


def test_rerun_skips_finished_shards_and_ignores_half_written_ones(tmp_path):
    out = tmp_path / "pfes"
    main([*ARGS, "--out", str(out)])
    first = json.loads((out / "report.json").read_text())
    main([*ARGS, "--out", str(out)])
    assert json.loads((out / "report.json").read_text())["shards_written_this_run"] == 0
    # a killed run leaves only a temporary name behind; the final name is absent -> redone
    victim = sorted(out.glob("*.tfrecord"))[1]
    before = victim.read_bytes()
    victim.rename(str(victim) + ".tmp-12345")
    main([*ARGS, "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert report["shards_written_this_run"] == 1 and victim.read_bytes() == before
    assert report["blocks_kept_per_class"] == first["blocks_kept_per_class"]


def test_min_keep_drops_images(tmp_path):
    out = tmp_path / "pfes"
    main([*ARGS, "--out", str(out), "--min-keep", "0.99", "--epsilon", "0.3"])
    report = json.loads((out / "report.json").read_text())
    assert report["images_out"] < report["images_in"]


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises((SystemExit, Exception), match="(?i)dataset|data"):
        main(["--dataset", "no_such_set", "--out", str(tmp_path), "--no-progress"])
