"""Hostile input to the Python side (issue 14): the preprocessing job refuses to resume under
another configuration, its folder loads as a dataset and killed runs' temporary files go; one
atomic writer serves the package."""

import json
import os

import numpy as np
import pytest

from iapdcnn import _io, data
from iapdcnn.preprocess import main as preprocess
from iapdcnn.preprocess import synthetic
from iapdcnn.training import checkpoint

# ----------------------------------------------------------------------------- preprocess

ARGS = ["--dataset", "synthetic", "--search-radius", "1", "--shard-size", "200", "--no-progress"]


def test_preprocess_refuses_another_configuration(tmp_path):
    out = tmp_path / "pfes"
    preprocess([*ARGS, "--out", str(out)])
    report = (out / "report.json").read_bytes()
    shards = {p.name: p.read_bytes() for p in out.glob("*.tfrecord")}
    for extra, needle in [
        (["--epsilon", "0.3"], "--epsilon: folder 0.1, this run 0.3"),
        (["--min-keep", "0.5"], "--min-keep: folder 0.0, this run 0.5"),
        (["--shard-size", "100"], "--shard-size: folder 200, this run 100"),
    ]:
        with pytest.raises(SystemExit) as e:
            preprocess([*ARGS, "--out", str(out), *extra])
        msg = str(e.value)
        assert f"--out {out}: fci_state.npz was written with another configuration" in msg, msg
        assert needle in msg, msg
    # nothing was claimed or written
    assert (out / "report.json").read_bytes() == report
    assert {p.name: p.read_bytes() for p in out.glob("*.tfrecord")} == shards
    # the shards' sidecars carry the configuration too (the state file gone, they still refuse)
    (out / "fci_state.npz").unlink()
    with pytest.raises(SystemExit, match=r"train-r000-\d+-of-\d+\.tfrecord\.json was written"):
        preprocess([*ARGS, "--out", str(out), "--epsilon", "0.3"])
    # a damaged state file is named
    (out / "fci_state.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(SystemExit, match=f"{out / 'fci_state.npz'} is damaged"):
        preprocess([*ARGS, "--out", str(out)])


def test_preprocess_output_loads_and_stale_temporaries_go(tmp_path):
    out = tmp_path / "pfes"
    preprocess([*ARGS, "--out", str(out)])
    x, y = data.load("tfrecord", path=str(out), as_numpy=True, shuffle=False, shard=False)
    assert x.shape == (512, 28, 28, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(y, synthetic()[1])  # the shards in order, sidecars skipped
    # what killed runs leave: this job's own temporaries go, a stranger's file stays
    dead = 2**22 + 17  # above Linux's default pid_max, so no live process has it
    stale = [
        f"train-r000-00001-of-00003.tfrecord.tmp-{dead}",
        f"train-r000-00001-of-00003.tfrecord.json.tmp-{dead}",
        f"fci_state.npz.tmp-{dead}",
        f"report.json.tmp-{dead}",
    ]
    for name in stale + [f"notes.txt.tmp-{dead}"]:
        (out / name).write_bytes(b"half")
    preprocess([*ARGS, "--out", str(out)])
    assert not [n for n in stale if (out / n).exists()]
    assert (out / f"notes.txt.tmp-{dead}").exists()
    x2, _ = data.load("tfrecord", path=str(out), as_numpy=True, shuffle=False, shard=False)
    assert len(x2) == 512


def test_tfrecord_folder_skips_sidecars_temporaries_and_empty_first_file(tmp_path, rng):
    imgs = rng.integers(0, 255, (4, 5, 5, 1), dtype=np.uint8)
    data.write_tfrecords(str(tmp_path / "a.tfrecord"), imgs[:0], [])  # every image dropped
    data.write_tfrecords(str(tmp_path / "b.tfrecord"), imgs, [0, 1, 2, 3])
    data.write_tfrecords(str(tmp_path / "c.tfrecord-00000-of-00001"), imgs[:1], [3])
    (tmp_path / "b.tfrecord.json").write_text("{}")
    (tmp_path / "c.tfrecord.tmp-123").write_bytes(b"partial")
    x, y = data.load("tfrecord", path=str(tmp_path), as_numpy=True, shuffle=False, shard=False)
    assert x.shape == (5, 5, 5, 1) and list(y) == [0, 1, 2, 3, 3]
    empty = tmp_path / "empty"
    empty.mkdir()
    data.write_tfrecords(str(empty / "a.tfrecord"), imgs[:0], [])
    with pytest.raises(data.DataError, match="hold no records"):
        data.load("tfrecord", path=str(empty), as_numpy=True)


def test_one_atomic_writer(tmp_path):
    """The trainer, the features cache, the loaders and the job all write through _io."""
    from iapdcnn import preprocess as job
    from iapdcnn.data import records
    from iapdcnn.training import features, output

    assert output.atomic_write is features.atomic_write is checkpoint.atomic_write
    assert checkpoint.atomic_write is _io.atomic_write is job.atomic_write
    assert records.atomic_path is _io.atomic_path
    target = tmp_path / "f.bin"

    def fail(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        _io.atomic_write(str(target), fail)
    assert os.listdir(tmp_path) == []  # neither the file nor its temporary
    _io.atomic_json(str(target), {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
