"""The tf.distribute engine (``--engine tf_distribute``, ``iapdcnn.distributed.tf_distribute``,
``python -m iapdcnn.tfrun``): LSG on MultiWorkerMirroredStrategy's collectives equals the NumPy
reference and Horovod's LSG on the same inputs, rejects a NaN or scaled worker, the trainer runs
end to end as 2 local workers (and as one MirroredStrategy process), and bad options name the
flag. Every multi-process run is bounded by a timeout."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from hvdrun import ROOT, child_env, run_hvd, run_launcher

TRAIN = os.path.join(ROOT, "train.py")
WORKER = os.path.join(ROOT, "tests", "distributed", "engine_lsg_worker.py")
TINY = ["--dataset", "synthetic", "--width", "4", "--batch-size", "16", "--threads", "1"]
TINY += ["--no-progress"]


def run_tf(n: int, args: list[str], timeout: float = 240, check: bool = True, env=None):
    """``python *args`` as ``n`` tf.distribute workers (``iapdcnn.tfrun``); a timeout or, with
    ``check``, a failure fails the test with the output."""
    cmd = [sys.executable, "-m", "iapdcnn.tfrun", "-np", str(n), "--timeout", str(timeout - 15)]
    cmd += [sys.executable, *args]
    return run_launcher("tfrun", cmd, timeout, check, env=env)


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--engine", "mpi"], "argument --engine: invalid choice: 'mpi'"),
        (
            ["--engine", "tf_distribute", "--elastic"],
            "--elastic is Horovod's elastic mode: --engine tf_distribute does not support it",
        ),
    ],
)
def test_bad_engine_options_name_the_flag(argv, needle, capsys):
    from iapdcnn.training import ConfigError, TrainConfig, parse_args

    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--engine must be one of horovod, tf_distribute"):
        TrainConfig(engine="mpi").check()
    assert parse_args(["--engine", "tf_distribute"]).engine == "tf_distribute"
    assert parse_args([]).engine == "horovod"


def test_tf_config_is_read_and_checked():
    from iapdcnn.distributed.tf_distribute import cluster_from_env, local_rank_and_size

    workers = ["a:1", "b:2", "a:3", "a:4"]
    assert [local_rank_and_size(workers, i) for i in range(4)] == [(0, 3), (0, 1), (1, 3), (2, 3)]
    assert local_rank_and_size([], 0) == (0, 1)

    conf = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    assert cluster_from_env({"TF_CONFIG": json.dumps(conf)}) == (["a:1", "b:2"], 1)
    assert cluster_from_env({}) == ([], 0)
    for bad, needle in [
        ("{not json", "TF_CONFIG must be JSON"),
        (json.dumps({"task": {"index": 0}}), "TF_CONFIG must be JSON"),
        (json.dumps({**conf, "task": {"type": "chief", "index": 0}}), "task type 'chief'"),
        (json.dumps({**conf, "task": {"type": "worker", "index": 2}}), "task index 2 outside"),
    ]:
        with pytest.raises(ValueError, match=needle):
            cluster_from_env({"TF_CONFIG": bad})


def test_use_engine_makes_it_the_world_and_the_reductions_collectives():
    from iapdcnn import world
    from iapdcnn.distributed import reduction

    class Fake:
        def rank(self):
            return 1

        def size(self):
            return 3

    assert world.engine() is None
    fake = Fake()
    world.use_engine(fake)
    try:
        assert world.horovod() is fake and reduction._hvd() is fake
        assert world.rank_size() == (1, 3)
    finally:
        world.use_engine(None)
    assert world.engine() is None and world.rank_size(from_environment=False) == (0, 1)


def test_bad_tf_config_stops_train_py_naming_it(tmp_path):
    env = dict(child_env(), TF_CONFIG="{not json")
    cmd = [sys.executable, TRAIN, "--engine", "tf_distribute", *TINY, "--out", str(tmp_path)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert p.returncode != 0
    assert "train.py: --engine tf_distribute: TF_CONFIG must be JSON" in p.stderr, p.stderr[-2000:]


def test_launcher_gives_each_worker_its_tf_config_and_stops_the_rest():
    from iapdcnn.tfrun import tf_configs

    confs = [json.loads(c) for c in tf_configs(3, ports=[1, 2, 3])]
    assert [c["task"] for c in confs] == [{"type": "worker", "index": i} for i in range(3)]
    assert all(
        c["cluster"]["worker"] == ["localhost:1", "localhost:2", "localhost:3"] for c in confs
    )
    launcher = [sys.executable, "-m", "iapdcnn.tfrun"]
    p = subprocess.run(launcher + ["-np", "0", "true"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "-np must be >= 1, got 0" in p.stderr
    p = subprocess.run(launcher + ["-np", "2"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "give the command each worker runs" in p.stderr
    # worker 1 fails at once: worker 0 (sleeping a minute) is stopped, the status is worker 1's
    code = (
        "import os, sys, time\n"
        "sys.exit(3) if os.environ['IAPDCNN_WORKER'] == '1' else time.sleep(60)"
    )
    t0 = time.monotonic()
    p = subprocess.run(
        launcher + ["-np", "2", sys.executable, "-c", code], timeout=60, env=child_env()
    )
    assert p.returncode == 3 and time.monotonic() - t0 < 30


def test_launcher_never_runs_two_workers_lines_together():
    """Unbuffered workers write a line in pieces (``print`` writes its text, then the newline);
    the launcher passes each worker's lines on whole, so 4 workers writing 50 long lines each
    in 3 pieces give 200 intact lines on stdout and on stderr, and each worker's last line,
    written without a newline, arrives as a line of its own."""
    code = (
        "import os, sys, time\n"
        "w = os.environ['IAPDCNN_WORKER']\n"
        "for i in range(50):\n"
        "    for f in (sys.stdout, sys.stderr):\n"
        "        f.write(f'W{w} {i} ' + w * 3000); f.flush(); time.sleep(0.001)\n"
        "        f.write(' END'); f.flush()\n"
        "        f.write('\\n'); f.flush()\n"
        "sys.stdout.write(f'tail{w}'); sys.stdout.flush()\n"
    )
    launcher = [sys.executable, "-m", "iapdcnn.tfrun", "-np", "4", sys.executable, "-u", "-c"]
    p = subprocess.run(
        launcher + [code], capture_output=True, text=True, timeout=120, env=child_env()
    )
    assert p.returncode == 0, p.stderr[-2000:]
    for stream in (p.stdout, p.stderr):
        lines = [ln for ln in stream.splitlines() if ln.startswith("W")]
        assert len(lines) == 200
        for ln in lines:
            w, i, body, end = ln.split(" ")
            assert body == w[1] * 3000 and end == "END", ln[:80]
        assert sorted((ln.split(" ")[0], int(ln.split(" ")[1])) for ln in lines) == sorted(
            (f"W{w}", i) for w in "0123" for i in range(50)
        )
    tails = sorted(ln for ln in p.stdout.splitlines() if not ln.startswith("W"))
    assert tails == [f"tail{w}" for w in "0123"], tails


def test_launcher_on_a_terminal_lets_the_workers_write_to_it():
    """On a terminal the workers get it as their stdout (progress bars need one)."""
    import pty

    # one write() each: two workers' prints (text, then newline) could mix on a shared terminal
    code = (
        "import os, sys; "
        "os.write(1, f\"W{os.environ['IAPDCNN_WORKER']} {sys.stdout.isatty()}\\n\".encode())"
    )
    main, sub = pty.openpty()
    cmd = [sys.executable, "-m", "iapdcnn.tfrun", "-np", "2", sys.executable, "-c", code]
    p = subprocess.Popen(cmd, stdout=sub, stderr=sub, env=child_env())
    os.close(sub)
    out = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the terminal's other end closed: everything is read
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    assert p.wait(timeout=60) == 0
    lines = sorted(ln.strip() for ln in out.decode().splitlines() if ln.startswith("W"))
    assert lines == ["W0 True", "W1 True"], out[-2000:]


# ----------------------------------------------------------------------------- LSG


@pytest.fixture(scope="module")
def lsg_runs(tmp_path_factory):
    """The worker's results: tf_distribute and Horovod at K = 2, tf_distribute at K = 3."""
    out = tmp_path_factory.mktemp("lsg")
    run_tf(2, [WORKER, "tf_distribute", str(out)])
    run_hvd(2, [WORKER, "horovod", str(out)], timeout=240)
    run_tf(3, [WORKER, "tf_distribute", str(out)], timeout=300)
    return {
        name: json.loads((out / f"{name}.json").read_text())
        for name in ("tf_distribute_2", "horovod_2", "tf_distribute_3")
    }


def _reference(case):
    from iapdcnn.reference import lsg as ref

    t = np.asarray(case["table"], np.float64)
    law = ref.worker_law(t[:, 0], t[:, 1], t[:, 2], loss_se=t[:, 4])
    want, skipped = ref.combine(np.asarray(case["inputs"], np.float64), law)
    return law, want, skipped


@pytest.mark.horovod
def test_lsg_on_tf_distribute_equals_reference_and_horovod(lsg_runs):
    tfd, hvd = lsg_runs["tf_distribute_2"], lsg_runs["horovod_2"]
    assert set(tfd) == set(hvd) and len(tfd) == 17
    for key, case in tfd.items():
        # the same inputs give Horovod's result, bit for bit (2 workers: one sum, one order)
        assert np.array_equal(case["out"], hvd[key]["out"]), key
        if key == "mean":
            continue
        assert np.array_equal(case["table"], hvd[key]["table"], equal_nan=True), key
        assert case["weights"] == hvd[key]["weights"], key
        law, want, skipped = _reference(case)
        assert case["weights"] == law.tolist(), key
        assert np.allclose(case["out"], want, atol=1e-6), key
        assert case["skipped"] == float(skipped)
    # Average is the mean of the two workers' inputs
    clean = np.asarray(tfd["clean/one/eager"]["inputs"])
    assert np.allclose(tfd["mean"]["out"], clean.mean(0), atol=1e-6)
    # K = 2 (spec §3): a NaN worker is dropped, a loss or norm outlier of two cannot be told
    for rounds in ("one", "two"):
        for how in ("eager", "fn"):
            assert tfd[f"nan/{rounds}/{how}"]["weights"] == [1.0, 0.0]
            assert np.all(np.isfinite(tfd[f"nan/{rounds}/{how}"]["out"]))
            assert tfd[f"scaled/{rounds}/{how}"]["weights"] == [1.0, 1.0]


def test_faulty_worker_is_rejected_on_tf_distribute(lsg_runs):
    runs = lsg_runs["tf_distribute_3"]
    for key, case in runs.items():
        if key == "mean":
            continue
        law, want, _ = _reference(case)
        assert case["weights"] == law.tolist(), key
        assert np.allclose(case["out"], want, atol=1e-6), key
        inputs = np.asarray(case["inputs"])
        kind = key.split("/")[0]
        if kind == "clean":
            assert case["weights"] == [1.0, 1.0, 1.0], key
        else:  # NaN on worker 1; a -10x gradient or a 100x loss on worker 2
            bad = 1 if kind == "nan" else 2
            assert case["weights"][bad] == 0 and case["workers_kept"] == 2, key
            assert np.allclose(case["out"], np.delete(inputs, bad, 0).mean(0), atol=1e-6), key


def test_eager_collectives_are_right_and_trace_once(tmp_path):
    """Between steps the trainer calls the collectives eagerly (BatchNorm statistics,
    evaluation sums, checkpoints); TensorFlow would run each eager all-gather as a new function
    and warn of retracing. The engine keeps one function per kind, so 8 rounds of every
    collective give the right values, uneven gathers and mixed dtypes included, and no
    warning."""
    p = run_tf(2, [os.path.join(ROOT, "tests", "distributed", "tfd_collectives_worker.py")])
    assert "retracing" not in p.stdout + p.stderr, (p.stdout + p.stderr)[-3000:]
    res = sorted(
        (json.loads(line[7:]) for line in p.stdout.splitlines() if line.startswith("RESULT ")),
        key=lambda d: d["rank"],
    )
    assert [d["rank"] for d in res] == [0, 1], p.stdout[-3000:]
    for d in res:
        for i, c in enumerate(d["calls"]):
            assert c["gathered"] == [[float(i)] * 3] + [[float(1 + i)] * 3] * 2
            assert c["summed"] == [[[3.0, 3.0], [3.0, 3.0]], 7]
            assert c["dtypes"] == ["float32", "int32"]
            assert c["max"] == [1.0, 0.0] and c["mean"] == [0.5]
            assert c["objs"] == [
                {"rank": 0, "i": i, "pad": ""},
                {"rank": 1, "i": i, "pad": "x" * 7},
            ]
            assert c["root"] == {"from": 1}


# ----------------------------------------------------------------------------- train.py


def test_train_py_np2_on_tf_distribute_with_nan_rank(tmp_path):
    out = tmp_path / "run"
    args = [TRAIN, "--engine", "tf_distribute", *TINY, "--epochs", "2", "--steps-per-epoch", "6"]
    args += ["--inject-fault", "1:nan:2", "--step-log", "--out", str(out)]
    p = run_tf(2, args, timeout=300)
    assert "test_accuracy=" in p.stdout, (p.stdout + p.stderr)[-3000:]
    hist = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    # steps 0-1 keep both workers; from step 2 on worker 1's NaN gradients are rejected
    assert hist[0]["workers_kept_mean"] == pytest.approx((2 * 2 + 4 * 1) / 6)
    assert hist[1]["workers_kept_mean"] == 1.0
    rep = json.loads((out / "report.json").read_text())
    assert rep["ranks"] == 2 and rep["config"]["engine"] == "tf_distribute"
    assert np.isfinite(rep["test_loss"]) and (out / "checkpoint.npz").exists()
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [s["law"] for s in steps[:3]] == [[1, 1], [1, 1], [1, 0]]


def test_train_py_one_process_on_mirrored_strategy(tmp_path):
    out = tmp_path / "one"
    cmd = [sys.executable, TRAIN, "--engine", "tf_distribute", *TINY, "--epochs", "1"]
    cmd += ["--steps-per-epoch", "3", "--reduction", "mean", "--out", str(out)]
    env = {k: v for k, v in child_env().items() if k != "TF_CONFIG"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["ranks"] == 1 and np.isfinite(rep["test_loss"])
