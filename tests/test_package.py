"""Package-level contracts: a cheap `import iapdcnn`, the lazily loaded op library, and the error
that says how to rebuild when TensorFlow changed under a built iapdcnn."""

import subprocess
import sys

import pytest

from iapdcnn import _build_info, _loader


def test_import_starts_neither_tensorflow_nor_horovod():
    code = (
        "import sys, iapdcnn, iapdcnn._C, iapdcnn.data, iapdcnn.reference;"
        "bad = [m for m in ('tensorflow', 'horovod') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_op_library_built_for_installed_tensorflow():
    import tensorflow as tf

    assert _build_info.TF_VERSION == tf.__version__
    assert hasattr(_loader.load_ops(), "iapdcnn_fci")


def test_tensorflow_version_mismatch_says_how_to_rebuild(monkeypatch):
    monkeypatch.setattr(_build_info, "TF_VERSION", "2.99.0")
    _loader.load_ops.cache_clear()
    try:
        with pytest.raises(
            ImportError, match=r"built against TensorFlow 2\.99\.0.*scripts/setup\.sh"
        ):
            _loader.load_ops()
    finally:
        monkeypatch.undo()
        _loader.load_ops.cache_clear()
    assert hasattr(_loader.load_ops(), "iapdcnn_fci")
