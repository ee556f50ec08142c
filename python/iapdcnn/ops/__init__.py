"""TensorFlow ops backed by the csrc kernels. The op library loads on first call.

Each op lives in its own module here; this package only re-exports them.
"""

from .conv import im2col_conv2d
from .cosine_nlm import cosine_nlm
from .fci import fci, fci_class_stats, fci_prototype, fci_within_class
from .marr_hildreth import marr_hildreth
from .mdcv import mdcv_distances

__all__ = [
    "cosine_nlm",
    "fci",
    "fci_class_stats",
    "fci_prototype",
    "fci_within_class",
    "im2col_conv2d",
    "marr_hildreth",
    "mdcv_distances",
]
