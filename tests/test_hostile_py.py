"""Hostile input to the Python side (issue 14, items 4-6): damaged, foreign and mismatched
checkpoints get one clear error naming the file and both sides; the preprocessing job refuses
to resume under another configuration, its folder loads as a dataset and killed runs' temporary
files go; ranks that hand a reduction different gradient lists all raise instead of hanging."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from hvdrun import ROOT, child_env, run_hvd
from iapdcnn import _io, data
from iapdcnn.data import synthetic
from iapdcnn.preprocess import main as preprocess
from iapdcnn.training import TrainConfig, checkpoint

TRAIN = os.path.join(ROOT, "train.py")

# ----------------------------------------------------------------------------- checkpoints


def _model_and_opt(width=4, classes=3):
    inp = tf.keras.Input((6, 6, 1))
    x = tf.keras.layers.Conv2D(width, 3)(inp)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(classes)(x))
    opt = tf.keras.optimizers.SGD(0.1, momentum=0.9)
    opt.build(model.trainable_variables)
    return model, opt


def _ident(**kw):
    return checkpoint.identity(TrainConfig(**kw), (6, 6, 1), 3)


META = {"epoch": 0, "history": [], "size": 1, "pruned": {}}


@pytest.fixture
def saved(tmp_path):
    model, opt = _model_and_opt()
    path = str(tmp_path / checkpoint.CKPT)
    checkpoint.save(path, model, opt, META, _ident())
    return path, model


def test_checkpoint_round_trip(saved):
    path, model = saved
    fresh, opt = _model_and_opt()
    meta = checkpoint.load(path, fresh, opt, _ident())
    assert meta["epoch"] == 0 and meta["identity"] == _ident()
    for a, b in zip(model.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def _damage(path, how):
    raw = open(path, "rb").read()
    if how == "empty":
        open(path, "wb").close()
    elif how == "truncated":
        open(path, "wb").write(raw[: len(raw) // 2])
    elif how == "corrupt":  # the zip's framing intact, a member's bytes flipped (CRC fails)
        i = raw.index(b"meta.npy") + 200
        open(path, "wb").write(raw[:i] + bytes(b ^ 0xFF for b in raw[i : i + 64]) + raw[i + 64 :])
    elif how == "random":
        open(path, "wb").write(np.random.default_rng(0).bytes(4096))
    elif how == "npy":
        with open(path, "wb") as fh:
            np.save(fh, np.arange(3))
    elif how == "pickle":
        with open(path, "wb") as fh:
            np.save(fh, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif how == "foreign_npz":
        with open(path, "wb") as fh:
            np.savez(fh, weights=np.ones(3))
    elif how == "bad_meta":
        with open(path, "wb") as fh:
            np.savez(fh, meta=np.array("{not json"))
    elif how == "meta_fields":
        with open(path, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps({"epoch": "x"})))
    elif how == "directory":
        os.remove(path)
        os.mkdir(path)


DAMAGES = [
    "empty",
    "truncated",
    "corrupt",
    "random",
    "npy",
    "pickle",
    "foreign_npz",
    "bad_meta",
    "meta_fields",
    "directory",
]


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_checkpoint_is_named(saved, how):
    path, _ = saved
    _damage(path, how)
    fresh, opt = _model_and_opt()
    before = [w.copy() for w in fresh.get_weights()]
    with pytest.raises(checkpoint.CheckpointError, match="--resume: " + path) as e:
        checkpoint.load(path, fresh, opt, _ident())
    assert "not a readable iapdcnn checkpoint" in str(e.value)
    for a, b in zip(before, fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # nothing was assigned


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"dataset": "mnist"}, "--dataset: checkpoint 'fashion_mnist', this run 'mnist'"),
        ({"width": 8}, "--width: checkpoint 16, this run 8"),
        ({"model": "resnet50"}, "--model: checkpoint 'auto', this run 'resnet50'"),
        ({"optimizer": "adam"}, "--optimizer: checkpoint 'sgd', this run 'adam'"),
        ({"features_mode": "channels"}, "--features-mode"),
        ({"prune": 0.3}, "--prune: checkpoint 0.0, this run 0.3"),
        ({"dataset": "synthetic", "seed": 3}, "--seed (synthetic data)"),
    ],
)
def test_foreign_checkpoint_names_both_sides(saved, change, needle):
    """Same shapes (the tiny test model does not follow the flags): only the identity tells."""
    path, _ = saved
    fresh, opt = _model_and_opt()
    with pytest.raises(checkpoint.CheckpointError, match=f"--resume: {path} belongs to") as e:
        checkpoint.load(path, fresh, opt, _ident(**change))
    assert needle in str(e.value)


def test_identity_covers_data_shape_and_version(saved, monkeypatch):
    path, _ = saved
    other = checkpoint.identity(TrainConfig(), (6, 6, 3), 3)
    with pytest.raises(checkpoint.CheckpointError, match=r"input shape: checkpoint \[6, 6, 1\]"):
        checkpoint.read_meta(path, other)
    import iapdcnn

    monkeypatch.setattr(iapdcnn, "__version__", "9.9.9")
    with pytest.raises(checkpoint.CheckpointError, match="iapdcnn version: checkpoint '0.1.0'"):
        checkpoint.read_meta(path, _ident())


def test_identity_reads_back_equal():
    """What JSON makes of it (tuples become lists) compares equal to a fresh one."""
    ident = _ident(dataset="tfrecord", data_path="some/dir")
    assert json.loads(json.dumps(ident)) == ident
    assert ident["data_path"] == os.path.abspath("some/dir")


def test_checkpoint_without_identity_is_refused(tmp_path):
    model, opt = _model_and_opt()
    path = str(tmp_path / "old.npz")
    arrays = {f"w_{i}": w for i, w in enumerate(model.get_weights())}
    arrays["meta"] = np.array(json.dumps({**META, "n_weights": len(model.get_weights())}))
    np.savez(path, **arrays)  # what the format before identities wrote
    with pytest.raises(checkpoint.CheckpointError, match=f"{path} records no identity"):
        checkpoint.load(path, model, opt, _ident())


def test_shape_mismatch_names_the_variable(tmp_path):
    small, opt = _model_and_opt(width=4)
    path = str(tmp_path / "c.npz")
    checkpoint.save(path, small, opt, META, _ident())
    big, opt2 = _model_and_opt(width=6)
    with pytest.raises(checkpoint.CheckpointError, match=r"weight 0 has shape \(3, 3, 1, 4\)"):
        checkpoint.load(path, big, opt2, _ident())


def _train(out, *extra, timeout=300):
    tiny = ["--dataset", "synthetic", "--width", "4", "--batch-size", "16", "--threads", "1"]
    argv = [*tiny, "--no-progress", "--epochs", "2", "--steps-per-epoch", "2", "--eval-limit"]
    return subprocess.run(
        [sys.executable, TRAIN, *argv, "64", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
    )


def test_train_resume_refuses_other_flags_and_damaged_checkpoints(tmp_path):
    """End to end through train.py: the error is one line naming the checkpoint, exit 1."""
    p = _train(tmp_path, "--inject-fault", "0:crash:3")
    assert p.returncode == 3, (p.stdout + p.stderr)[-3000:]
    ckpt = tmp_path / checkpoint.CKPT
    p = _train(tmp_path, "--resume", "--width", "8")
    assert p.returncode == 1, (p.stdout + p.stderr)[-3000:]
    assert f"train.py: --resume: {ckpt} belongs to another run" in p.stderr
    assert "--width: checkpoint 4, this run 8" in p.stderr and "Traceback" not in p.stderr
    ckpt.write_bytes(ckpt.read_bytes()[:300])
    p = _train(tmp_path, "--resume")
    assert p.returncode == 1 and f"{ckpt} is not a readable iapdcnn checkpoint" in p.stderr
    assert "Traceback" not in p.stderr


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


def test_preprocess_command_ends_with_the_message(tmp_path, capsys):
    from iapdcnn import cli

    out = tmp_path / "pfes"
    assert cli.main(["preprocess", *ARGS, "--out", str(out)]) == 0
    with pytest.raises(SystemExit) as e:
        cli.main(["preprocess", *ARGS, "--out", str(out), "--epsilon", "0.2"])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.startswith(f"iapdcnn preprocess: --out {out}: ")
    assert "--epsilon: folder 0.1, this run 0.2" in err
    with pytest.raises(SystemExit) as e:
        cli.main(["preprocess", "--dataset", "cifar10", "--out", str(tmp_path / "x")])
    assert e.value.code == 1 and "cifar" in capsys.readouterr().err


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


# ----------------------------------------------------------------------------- collectives

WORKER = os.path.join(ROOT, "tests", "distributed", "mismatch_worker.py")
MISMATCHED = [
    "lsg_count",
    "lsg_size_fn",
    "lsg_off_fn",
    "dis_cnn_count",
    "median_split",
    "trimmed_split_fn",
    "median_split_f16",
    "lsg_one_split",
    "lsg_one_split_fn",
]


@pytest.mark.horovod
def test_mismatched_gradient_lists_raise_on_every_rank():
    cases = [*MISMATCHED, "median_total", "lsg_one_total", "lsg_same", "median_same_f16"]
    p = run_hvd(2, [WORKER, *cases], timeout=240)  # a hang fails here, not in CI's timeout
    out = p.stdout
    lines = {}
    for line in out.splitlines():
        if "RANK " in line:
            rank, case, rest = ([*line.split("RANK ", 1)[1].split(" ", 2), ""])[:3]
            lines[(int(rank), case)] = rest
    for r in (0, 1):
        assert (r, "DONE") in lines, out[-3000:]
        for case in MISMATCHED:
            msg = lines.get((r, case), "")
            assert msg.startswith("RAISED InvalidArgumentError"), (case, msg)
            assert "the ranks handed in different gradient lists" in msg, (case, msg)
            if r == 0:  # rank 0 hands in the same list in every case
                assert "rank 0 has 2 gradients, 17 elements" in msg, (case, msg)
        # another total size: Horovod's own allgather check, still an error and no hang
        assert "Mismatched ALLGATHER tensor shapes" in lines[(r, "median_total")]
        assert "Mismatched ALLREDUCE tensor shapes" in lines[(r, "lsg_one_total")]
        for case in ("lsg_same", "median_same_f16"):
            assert lines[(r, case)].startswith("OK"), (case, lines[(r, case)])
    # rank 1's own description: the count and size it handed in
    assert "rank 1 has 3 gradients, 19 elements, dtype float32" in lines[(1, "lsg_count")]
    assert "rank 1 has 2 gradients, 20 elements" in lines[(1, "lsg_size_fn")]
    assert "dtype float16" in lines[(1, "median_split_f16")]
    assert lines[(0, "lsg_same")] == lines[(1, "lsg_same")]  # identical results on both ranks
