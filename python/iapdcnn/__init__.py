"""iapdcnn: IA-PDCNNOA as a TensorFlow extension.

Importing the package is cheap: it starts neither TensorFlow nor Horovod. The compiled op library
loads on first use of ``iapdcnn.ops``; the NumPy kernels live in ``iapdcnn._C``.

Keras: iapdcnn's Keras code (layers, pruning, ``distributed``) follows the Keras that TensorFlow
picked for ``tf.keras`` in the process: Keras 3 by default on TensorFlow 2.21, tf_keras (Keras 2)
when ``TF_USE_LEGACY_KERAS=1`` is set before TensorFlow loads (``use_tf_keras()``). The choice
lives in ``iapdcnn._keras``.

Citations of the form "spec §2a" in the code (Python and C++) are sections of docs/spec.md, the
algorithms in full: formulas, the paper's corrected errors, departures.
"""

from __future__ import annotations

import os
import sys

__version__ = "0.1.0"

__all__ = ["__version__", "use_tf_keras"]


def use_tf_keras() -> None:
    """Makes ``tf.keras`` be tf_keras (Keras 2) in this process, as the trainer and Horovod's
    Keras API need: sets ``TF_USE_LEGACY_KERAS=1``. Call it before anything uses ``tf.keras``
    (entry points call it first thing).

    Raises:
      RuntimeError: TensorFlow already resolved ``tf.keras`` to Keras 3 in this process.
    """
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return
    # TensorFlow resolves tf.keras on first use; if that was before the variable was set, it is
    # Keras 3 for good.
    name = getattr(tf.keras, "__name__", "")
    if not name.startswith("tf_keras"):
        raise RuntimeError(
            "iapdcnn.use_tf_keras(): tf.keras is already Keras 3 in this process (it was used "
            "before TF_USE_LEGACY_KERAS=1 was set); call use_tf_keras() before using tf.keras, or "
            "export TF_USE_LEGACY_KERAS=1 before starting Python"
        )
