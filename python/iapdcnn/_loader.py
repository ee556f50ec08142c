"""Lazy loading of the TensorFlow op library ``_tfops.so``, with a clear error when it was built
against another TensorFlow than the one installed."""

from __future__ import annotations

import functools
import os
from typing import Any

_REBUILD = (
    "Rebuild iapdcnn against the installed TensorFlow: run `bash scripts/setup.sh`, or "
    "`pip install --no-build-isolation --force-reinstall --no-deps .` in the iapdcnn checkout."
)


@functools.cache
def load_ops() -> Any:
    """Loads ``_tfops.so`` once and returns the module of generated op wrappers."""
    import tensorflow as tf

    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "_tfops.so")
    try:
        from . import _build_info

        built_for = _build_info.TF_VERSION
    except ImportError:
        built_for = None
    if not os.path.exists(path):
        raise ImportError(f"iapdcnn's TensorFlow op library is missing ({path}). {_REBUILD}")
    if built_for and built_for != tf.__version__:
        raise ImportError(
            f"iapdcnn's op library was built against TensorFlow {built_for}, but TensorFlow "
            f"{tf.__version__} is installed. {_REBUILD}"
        )
    try:
        return tf.load_op_library(path)
    except (tf.errors.NotFoundError, OSError) as e:
        raise ImportError(
            f"iapdcnn's op library {path} does not load into TensorFlow {tf.__version__} "
            f"(built for {built_for or 'an unknown version'}): {e}. {_REBUILD}"
        ) from e
