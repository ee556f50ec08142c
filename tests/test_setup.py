"""scripts/setup.sh's Horovod patch: it applies to the pinned Horovod sdist and changes what it
says; when it does not apply, apply_patch.sh names the file, hunk and line and changes nothing;
setup.sh refuses an unsupported Python by name; a second set-up run rebuilds nothing."""

import os
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

from hvdrun import ROOT

HVD_VERSION = "0.28.1"
PATCH = os.path.join(ROOT, "third_party", "horovod", f"horovod-{HVD_VERSION}.patch")
APPLY = os.path.join(ROOT, "scripts", "apply_patch.sh")
SDIST = os.path.join(ROOT, "build", "horovod", f"horovod-{HVD_VERSION}.tar.gz")
PATCHED = [
    "horovod/tensorflow/xla_mpi_ops.cc",
    "horovod/tensorflow/keras/__init__.py",
    "horovod/tensorflow/keras/callbacks.py",
    "horovod/tensorflow/__init__.py",
]


def apply(src, patch=PATCH) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", APPLY, str(src), str(patch)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> str:
    """The sdist setup.sh keeps in build/horovod; fetched only when that file is absent."""
    if os.path.exists(SDIST):
        return SDIST
    d = tmp_path_factory.mktemp("sdist")
    p = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
        + ["-d", str(d), f"horovod=={HVD_VERSION}"],
        capture_output=True,
        text=True,
    )
    path = d / f"horovod-{HVD_VERSION}.tar.gz"
    if p.returncode != 0 or not path.exists():
        pytest.skip(f"the Horovod sdist is absent ({SDIST}) and could not be downloaded")
    return str(path)


def unpack(sdist: str, into) -> str:
    with tarfile.open(sdist) as t:
        t.extractall(into, filter="data")
    return os.path.join(into, f"horovod-{HVD_VERSION}")


def read(root, rel) -> str:
    with open(os.path.join(root, rel)) as f:
        return f.read()


def test_patch_applies_to_the_pinned_sdist(sdist, tmp_path):
    src = unpack(sdist, tmp_path)
    before = {f: read(src, f) for f in PATCHED}
    p = apply(src)
    assert p.returncode == 0, p.stderr
    for f in PATCHED:
        after = read(src, f)
        assert after != before[f] and "iapdcnn:" in after, f
    xla = read(src, PATCHED[0])
    # the XLA includes now sit under HAVE_GPU
    assert xla.index("#if HAVE_GPU") < xla.index('#include "tensorflow/compiler/tf2xla/')
    assert "from keras import backend as K" not in read(src, PATCHED[1])
    assert "K = tf.keras.backend" in read(src, PATCHED[2])
    # applying twice is refused, not silently reversed
    again = apply(src)
    assert again.returncode != 0 and "already patched" in again.stderr, again.stderr


def test_patch_that_does_not_apply_names_the_hunk_and_changes_nothing(sdist, tmp_path):
    src = unpack(sdist, tmp_path)
    xla = os.path.join(src, PATCHED[0])
    text = read(src, PATCHED[0]).replace(
        '#include "tensorflow/compiler/tf2xla/xla_op_kernel.h"',
        '#include "tensorflow/compiler/tf2xla/moved_elsewhere.h"',
    )
    with open(xla, "w") as f:
        f.write(text)
    before = {f: read(src, f) for f in PATCHED}
    p = apply(src)
    assert p.returncode != 0
    assert "does not apply" in p.stderr and "nothing was changed" in p.stderr, p.stderr
    assert "horovod/tensorflow/xla_mpi_ops.cc: hunk 1 (at line 22 of the original)" in p.stderr
    assert {f: read(src, f) for f in PATCHED} == before  # all or nothing


def test_apply_patch_bad_arguments_are_named(tmp_path):
    p = apply(tmp_path / "missing", PATCH)
    assert p.returncode != 0 and "SOURCE_DIR" in p.stderr
    p = apply(tmp_path, tmp_path / "none.patch")
    assert p.returncode != 0 and "PATCH_FILE" in p.stderr


def test_setup_refuses_an_unsupported_python():
    env = dict(os.environ, IAPDCNN_PYTHON="python2.7", IAPDCNN_VENV="/nonexistent/venv")
    p = subprocess.run(
        ["bash", os.path.join(ROOT, "scripts", "setup.sh")], capture_output=True, text=True, env=env
    )
    assert p.returncode != 0
    assert "IAPDCNN_PYTHON=python2.7 does not run as Python 3.11, 3.12 or 3.13" in p.stderr
    assert not os.path.exists("/nonexistent/venv")


def test_second_setup_run_rebuilds_nothing():
    venv = os.path.join(ROOT, ".venv")
    if os.path.realpath(sys.prefix) != os.path.realpath(venv):
        pytest.skip(f"tests run from {sys.prefix}, not from setup.sh's {venv}")
    t0 = time.monotonic()
    p = subprocess.run(
        ["bash", os.path.join(ROOT, "scripts", "setup.sh")], capture_output=True, text=True
    )
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    assert "building" not in p.stderr and "installing" not in p.stderr, p.stderr
    assert took < 60, f"second set-up run took {took:.0f} s"
    assert shutil.which("patch")
