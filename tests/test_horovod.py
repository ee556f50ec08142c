"""Horovod with Gloo works in this environment: collectives give the right values across ranks,
and horovodrun's build check lists TensorFlow and Gloo."""

import os
import re
import subprocess

from hvdrun import HERE, horovodrun_path, run_hvd


def test_check_build_lists_tensorflow_and_gloo():
    out = subprocess.run(
        [horovodrun_path(), "--check-build"], capture_output=True, text=True, timeout=120
    ).stdout
    assert re.search(r"\[X\] TensorFlow", out), out
    assert re.search(r"\[X\] Gloo", out), out


def test_allreduce_and_allgather_np2():
    p = run_hvd(2, [os.path.join(HERE, "horovod", "collectives.py")], timeout=180)
    out = p.stdout + p.stderr
    ranks = sorted(
        re.findall(r"COLLECTIVES_OK rank=(\d) size=2 sum=\[3.0, 6.0\] " r"gathered_rows=3", out)
    )
    assert ranks == ["0", "1"], out
