"""iapdcnn: IA-PDCNNOA as a TensorFlow extension.

Importing the package is cheap: it starts neither TensorFlow nor Horovod. The compiled op library
loads on first use of ``iapdcnn.ops``; the NumPy kernels live in ``iapdcnn._C``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
