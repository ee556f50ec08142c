"""TensorFlow ops backed by the csrc kernels. The op library loads on first call.

Each op lives in its own module here; this package only re-exports them.
"""

from .fci import fci
from .mdcv import mdcv_distances

__all__ = ["fci", "mdcv_distances"]
