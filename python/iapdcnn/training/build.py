"""What one training run is made of, built from its ``TrainConfig``: the data as NumPy arrays,
the Keras model (with the MHO-PFES layers in front under ``--features``), the optimizer with its
warm-up schedule, the reduction and the MDCV pruning callback."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .config import TrainConfig
from .errors import ConfigError


def load_arrays(cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Whole train and test splits as NumPy (the loop shards them per epoch itself, so that a
    resumed run sees exactly the batches an uninterrupted run would)."""
    from iapdcnn import data

    if cfg.dataset == "synthetic":
        xtr, ytr = data.synthetic(2048, cfg.seed)
        xte, yte = data.synthetic(512, cfg.seed + 1)
        return xtr, ytr, xte, yte

    kw = dict(as_numpy=True, shard=False, shuffle=False, path=cfg.data_path)
    xtr, ytr = data.load(cfg.dataset, "train", **kw)
    xte, yte = data.load(cfg.dataset, "test", **kw)
    return xtr, ytr, xte, yte


def _all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _all_layers(layer)
        else:
            yield layer


def odd_batch_crashes(cfg: TrainConfig, env: dict[str, str] | None = None) -> bool:
    """Whether an odd batch can crash TensorFlow itself in this run: with oneDNN on (TensorFlow's
    default on x86 CPUs), TF 2.21's gradients of strided convolutions corrupt the heap on odd
    batches of narrow layers (an abort, "double free or corruption"; docs/known_issues.md).
    ``--conv keras`` runs those kernels; iapdcnn's own (``--conv im2col``) and cuDNN do not."""
    env = os.environ if env is None else env
    onednn = env.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false", "off")
    if cfg.conv != "keras" or not onednn:
        return False
    import tensorflow as tf

    return not tf.config.list_physical_devices("GPU")


def check_odd_batch(cfg: TrainConfig, env: dict[str, str] | None = None) -> None:
    """Refuses an odd ``--batch-size`` where ``odd_batch_crashes`` (``--balance`` keeps the
    batches it sets even there).

    Raises:
      ConfigError: naming ``--batch-size``, with the ways round it.
    """
    if cfg.batch_size % 2 and odd_batch_crashes(cfg, env):
        raise ConfigError(
            f"--batch-size {cfg.batch_size} is odd: with --conv keras on a CPU, TensorFlow's "
            "oneDNN gradients of strided convolutions corrupt memory on odd batches of narrow "
            "layers and the process aborts (docs/known_issues.md). Use an even --batch-size, "
            "--conv im2col (iapdcnn's kernels), or TF_ENABLE_ONEDNN_OPTS=0 (slower)"
        )


def build_model(cfg: TrainConfig, input_shape, num_classes: int, train_xy) -> Any:
    """The network ``--model`` names; MHO-PFES's EdgeFeatures + FCIFilter (spec §1) in front
    under ``--features``, the FCI statistics adapted on the first 4096 training images."""
    import tensorflow as tf

    check_odd_batch(cfg)

    from iapdcnn import models

    kind = cfg.model
    if kind == "auto":
        kind = "small_resnet" if max(input_shape[:2]) < 64 else "resnet50"
    preprocessing = []
    if cfg.features:
        from iapdcnn.layers import EdgeFeatures, FCIFilter

        # They sit inside the one flat model, so --prune still sees every conv.
        edges, fci = EdgeFeatures(), FCIFilter(epsilon=cfg.fci_epsilon)
        x, y = train_xy
        ds = tf.data.Dataset.from_tensor_slices((x[:4096], y[:4096])).batch(256)
        # every rank adapts on the same images; under --elastic without the allreduce, which a
        # rank joining a running job would call alone (the state's sync then hands it rank 0's)
        local = (lambda a, op: a) if cfg.elastic else None
        fci.adapt(ds.map(lambda a, b: (edges(a), b)), reduce=local)
        preprocessing = [edges, fci]
    if kind == "small_resnet":
        model = models.small_resnet(
            input_shape,
            num_classes,
            width=cfg.width,
            blocks_per_stage=cfg.blocks,
            conv=cfg.conv,
            preprocessing=preprocessing,
        )
    else:
        model = models.resnet50(
            input_shape, num_classes, conv=cfg.conv, preprocessing=preprocessing
        )
    if cfg.init == "kmeans":  # every rank computes the same (seeded); rank 0's is broadcast
        from iapdcnn.initializers import kmeans_init

        kmeans_init(model, train_xy[0][:2048], seed=cfg.seed)
    if cfg.bn_momentum is not None:
        for layer in _all_layers(model):
            if isinstance(layer, tf.keras.layers.BatchNormalization):
                layer.momentum = cfg.bn_momentum
    return model


def build_schedule(cfg: TrainConfig, world_size: int, steps_per_epoch: int) -> Any:
    """The learning rate per optimizer step: warm-up to ``lr * world_size``, then
    ``--lr-schedule`` to the end of the run (``schedules.WarmupDecay``)."""
    from .schedules import WarmupDecay

    return WarmupDecay(
        cfg.lr,
        world_size,
        cfg.warmup_epochs * steps_per_epoch,
        total_steps=cfg.epochs * steps_per_epoch,
        decay=cfg.lr_schedule,
    )


def build_optimizer(cfg: TrainConfig, schedule: Any) -> Any:
    """SGD with momentum, Adam, or CGMSE (``iapdcnn.optimizers``), on ``schedule``."""
    import tensorflow as tf

    if cfg.optimizer == "sgd":
        return tf.keras.optimizers.SGD(schedule, momentum=cfg.momentum)
    if cfg.optimizer == "cgmse":
        from iapdcnn.optimizers import CGMSE

        return CGMSE(schedule)
    return tf.keras.optimizers.Adam(schedule)


def build_reduction(cfg: TrainConfig, faulty_gradients: bool) -> Any:
    """``--reduction`` with its options; behind ``faults.gradient_fault`` when a rank corrupts
    its gradients."""
    from iapdcnn.distributed import make_reduction

    from .faults import gradient_fault

    if cfg.sync == "agwu":  # local steps between AGWU's merges: no per-step reduction
        from iapdcnn.distributed.agwu import LocalReduction

        reduction = LocalReduction()
    else:
        reduction = make_reduction(cfg.reduction, **cfg.reduction_options())
    reduction = gradient_fault(reduction) if faulty_gradients else reduction
    if cfg.balance:  # the gradients weighted by the rank's share of the global batch
        from .balance import sample_weighted

        reduction = sample_weighted(reduction)
    return reduction


def build_pruner(cfg: TrainConfig, steps_per_epoch: int) -> Any:
    """``--prune-mode soft``: masks ramp up to the ``--prune`` FLOPs target between
    ``--prune-at`` and ``--prune-end`` (spec §2a's criterion by default), then ``strip`` makes them
    physical at the end."""
    from iapdcnn.pruning import MDCVPruning

    total = max(2, cfg.epochs * steps_per_epoch)
    begin = int(cfg.prune_at * total)
    return MDCVPruning(
        target_flops_reduction=cfg.prune,
        begin_step=begin,
        end_step=max(begin + 1, int(cfg.prune_end * total)),
        frequency=max(1, steps_per_epoch // 4),
        criterion=cfg.prune_criterion,
        round_to=cfg.prune_round_to,
    )


def prune_step(cfg: TrainConfig, steps_per_epoch: int) -> int | None:
    """``--prune-mode early``: the global step before which the model is cut, or None."""
    if cfg.prune <= 0 or cfg.prune_mode != "early":
        return None
    return int(cfg.prune_at * cfg.epochs * steps_per_epoch)
