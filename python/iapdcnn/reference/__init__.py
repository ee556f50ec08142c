"""NumPy reference implementations (oracles for the tests), written for clarity, not speed."""

from . import lsg  # spec §3 oracle: lsg.law, lsg.worker_law, lsg.combine, ...
from .conv import im2col_conv2d, im2col_conv2d_backprop_filter, im2col_conv2d_backprop_input
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
    "im2col_conv2d_backprop_filter",
    "im2col_conv2d_backprop_input",
    "lsg",
    "marr_hildreth",
    "mdcv_distances",
]
