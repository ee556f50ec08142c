"""MDCV filter pruning that physically shrinks Keras models (spec §2a), with L1, FPGM, PDCNNO's
FMP and Dis-CNN's feature-map redundancy behind the same interface.

    small = iapdcnn.pruning.prune(model, "mdcv", target_flops_reduction=0.4)
    print(count_flops(model).table(count_flops(small)))

During training, ``MDCVPruning`` masks filters on a schedule and ``strip`` makes it physical.
"""

from .callback import MDCVPruning, broadcast_plan, strip, strip_pruning
from .core import (
    PruningPlan,
    plan,
    plan_channels,
    prune,
    prune_channels,
    rebuild_with_optimizer,
    score_layers,
)
from .criteria import CRITERIA
from .flops import FlopsCount, count_flops
from .graph import ChannelGraph, UnknownLayerWarning

__all__ = [
    "CRITERIA",
    "ChannelGraph",
    "FlopsCount",
    "MDCVPruning",
    "PruningPlan",
    "UnknownLayerWarning",
    "broadcast_plan",
    "count_flops",
    "plan",
    "plan_channels",
    "prune",
    "prune_channels",
    "rebuild_with_optimizer",
    "score_layers",
    "strip",
    "strip_pruning",
]
