"""TensorFlow ops backed by the csrc kernels. The op library loads on first call.

Each op lives in its own module here; this package only re-exports them.
"""

from .cosine_nlm import cosine_nlm
from .fci import fci, fci_class_stats, fci_prototype, fci_within_class
from .marr_hildreth import marr_hildreth

__all__ = [
    "fci",
    "cosine_nlm",
    "marr_hildreth",
    "fci_class_stats",
    "fci_prototype",
    "fci_within_class",
]
