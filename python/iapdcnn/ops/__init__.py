"""TensorFlow ops backed by the csrc kernels. The op library loads on first call.

Each op lives in its own module here; this package only re-exports them.
"""

from .fci import fci

__all__ = ["fci"]
from .conv import im2col_conv2d  # noqa: E402

__all__ += ["im2col_conv2d"]
