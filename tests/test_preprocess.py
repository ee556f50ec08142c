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


# ------------------------------------------------------------------ one worker killed (horovod)

KILL_ARGS = ["-m", "iapdcnn.preprocess", "--dataset", "digits", "--search-radius", "1"]
KILL_ARGS += ["--shard-size", "16", "--batch-size", "16", "--no-progress"]


def _worker_pid(marker: str, rank: int) -> int | None:
    """The pid of the preprocess worker of ``rank`` whose environment holds ``marker`` (this
    test's job, never another process), or None while it has not started."""
    import os

    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if argv[1:3] == [b"-m", b"iapdcnn.preprocess"] and marker.encode() in env:
            if f"HOROVOD_RANK={rank}".encode() in env:
                return int(d)
    return None


def _examples(path) -> list:
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset([str(path)])]


@pytest.mark.horovod
def test_killed_worker_then_rerun_gives_the_uninterrupted_output(tmp_path):
    """One of two workers is killed with SIGKILL after it has written some of its shards: the
    job ends (no rank hangs in a collective), leaves no report, and the same command run again
    finishes the missing shards only, with the output of a run that was never interrupted (the
    same files, byte for byte) and no temporary file left behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from hvdrun import ROOT, child_env, horovodrun_path, run_hvd

    ref, out = tmp_path / "ref", tmp_path / "out"
    run_hvd(2, [*KILL_ARGS, "--out", str(ref)], timeout=180)
    n_shards = len(list(ref.glob("train-r001-*.tfrecord")))
    assert n_shards >= 20  # enough shards that the kill lands while rank 1 writes them

    marker = f"IAPDCNN_TEST_JOB={out}"
    cmd = [horovodrun_path(), "-np", "2", "-H", "localhost:2", "--gloo", sys.executable]
    proc = subprocess.Popen(
        [*cmd, *KILL_ARGS, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(child_env(), IAPDCNN_TEST_JOB=str(out)),
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        pid = None
        while time.monotonic() < deadline and proc.poll() is None:
            if pid is None:
                pid = _worker_pid(marker, 1)
            if pid is not None and list(out.glob("train-r001-*.tfrecord")):
                os.kill(pid, signal.SIGKILL)  # rank 1, a few shards in
                break
            time.sleep(0.005)
        else:
            pytest.fail(f"rank 1 wrote no shard in time:\n{proc.communicate()[0][-4000:]!r}")
        text = proc.communicate(timeout=60)[0].decode(errors="replace")  # nothing hangs
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, text[-4000:]
    assert not (out / "report.json").exists()  # the job did not finish
    written = len(list(out.glob("train-r001-*.tfrecord")))
    assert 1 <= written < n_shards, written  # killed mid-run

    run_hvd(2, [*KILL_ARGS, "--out", str(out)], timeout=180)
    report = json.loads((out / "report.json").read_text())
    first = json.loads((ref / "report.json").read_text())
    assert 0 < report["shards_written_this_run"] < report["shards"] == first["shards"]
    for k in ("images_in", "images_out", "blocks_kept_per_class", "blocks_per_class"):
        assert report[k] == first[k], k
    names = sorted(p.name for p in ref.iterdir() if p.name != "report.json")
    assert sorted(p.name for p in out.iterdir() if p.name != "report.json") == names
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    for name in names:
        if name.endswith(".tfrecord"):  # record by record: the image bytes, shape and label
            # (a record's fields are a protobuf map, whose byte order may differ by process)
            assert _examples(out / name) == _examples(ref / name), name
        elif name.endswith(".tfrecord.json"):
            assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    with np.load(ref / "fci_state.npz") as a, np.load(out / "fci_state.npz") as b:
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
