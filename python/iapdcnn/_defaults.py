"""The ops' argument defaults, as ``iapdcnn._C.defaults`` holds them: read from the
``<Kernel>Defaults`` structs of ``csrc/<kernel>/<kernel>.h``, the one place they are written (the
TensorFlow ops' attribute defaults come from the same structs). Python signatures that show a
default take it from here; tests/test_defaults.py checks that every one of them does."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from . import _C


def defaults(op: str) -> Mapping[str, Any]:
    """``{argument: default}`` of ``_C.<op>`` (and of ``iapdcnn.ops.<op>``), read-only."""
    return MappingProxyType(dict(_C.defaults[op]))


COSINE_NLM = defaults("cosine_nlm")
MARR_HILDRETH = defaults("marr_hildreth")
MDCV = defaults("mdcv_distances")
CONV = defaults("im2col_conv2d")
FCI_FILTER = defaults("fci_filter")  # the FCIFilter layer's (no op of that name)
# marr_hildreth's mode names (csrc's kEdgeModeNames), for argument choices
MARR_HILDRETH_MODES: tuple[str, ...] = tuple(_C.marr_hildreth_modes)
# its Laplacian neighbour counts (csrc's kLaplacianNeighbours)
MARR_HILDRETH_LAPLACIANS: tuple[int, ...] = tuple(_C.marr_hildreth_laplacians)
