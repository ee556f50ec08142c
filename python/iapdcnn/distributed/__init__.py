"""IM-BGDS (spec §3): LAW/LSG outlier-rejecting gradient reduction over Horovod, plus the
alternatives behind the same interface. Ways in: ``DistributedGradientTape`` (custom loops) and
``DistributedOptimizer`` + ``ReductionStatsCallback`` (``model.fit``). Importing this package
imports TensorFlow; Horovod is imported on the first collective."""

from .keras import DistributedOptimizer, LossWithStandardError, ReductionStatsCallback
from .law import (
    direction_law,
    law_mask,
    loo_cosine,
    loss_standard_error,
    lsg_loss,
    masked_median,
    reputation_update,
    sample_law,
    worker_law,
)
from .reduction import (
    DIRECTIONS,
    FINGERPRINT_COLUMNS,
    REDUCTIONS,
    TABLE_COLUMNS,
    DisCNNReduction,
    LSGReduction,
    MeanReduction,
    MedianReduction,
    Reduction,
    TrimmedMeanReduction,
    apply_unless_skipped,
    gradient_fingerprint,
    make_reduction,
    worker_table,
)
from .tape import DistributedGradientTape

__all__ = [
    "DIRECTIONS",
    "FINGERPRINT_COLUMNS",
    "REDUCTIONS",
    "TABLE_COLUMNS",
    "DisCNNReduction",
    "DistributedGradientTape",
    "DistributedOptimizer",
    "LSGReduction",
    "LossWithStandardError",
    "MeanReduction",
    "MedianReduction",
    "Reduction",
    "ReductionStatsCallback",
    "TrimmedMeanReduction",
    "apply_unless_skipped",
    "direction_law",
    "gradient_fingerprint",
    "law_mask",
    "loo_cosine",
    "loss_standard_error",
    "lsg_loss",
    "make_reduction",
    "masked_median",
    "reputation_update",
    "sample_law",
    "worker_law",
    "worker_table",
]
