"""The iapdcnn trainer (``train.py`` at the repository root calls ``main``): IA-PDCNNOA on one
machine, under ``horovodrun -np N``, or as ``tf.distribute`` workers (``--engine tf_distribute``,
started by ``python -m iapdcnn.tfrun -np N``).

Read it in this order: ``config`` (the flags and their rules) -> ``build`` (data, model,
optimizer, reduction, pruner) -> ``loop`` (the ``Trainer``: steps through
``DistributedGradientTape``, epochs, evaluation) -> ``checkpoint`` and ``output`` (what a run
leaves in ``--out``); ``faults`` injects the faults of ``--inject-fault``."""

from __future__ import annotations

import os

from .config import DATASETS, REDUCTIONS, TrainConfig, build_parser, parse_args
from .errors import ConfigError
from .faults import FAULT_KINDS, Fault, parse_fault

__all__ = [
    "ConfigError",
    "DATASETS",
    "FAULT_KINDS",
    "REDUCTIONS",
    "Fault",
    "TrainConfig",
    "build_parser",
    "main",
    "parse_args",
    "parse_fault",
    "pin_gpu",
    "run",
]


def _set_threads(cfg: TrainConfig, local_size: int) -> None:
    import tensorflow as tf

    threads = cfg.threads
    if threads == 0 and local_size > 1:
        # TF's default gives every rank all the cores: ranks sharing a machine would oversubscribe
        threads = max(1, len(os.sched_getaffinity(0)) // local_size)
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def pin_gpu(local_rank: int) -> str | None:
    """One GPU per rank, Horovod's recipe: the ``local_rank``-th process of a machine sees only
    GPU ``local_rank % n`` (ranks beyond the GPUs share them round robin), with memory growth
    on, so that ranks sharing a machine neither all compute on GPU 0 nor each take every GPU's
    memory. Returns the GPU's name; None (nothing done) without a GPU. Call it before
    TensorFlow has run anything."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    gpu = gpus[local_rank % len(gpus)]
    tf.config.set_visible_devices(gpu, "GPU")
    tf.config.experimental.set_memory_growth(gpu, True)
    return gpu.name


def _init_tf_distribute(cfg: TrainConfig):
    """``--engine tf_distribute``: the strategy's collectives under Horovod's names
    (``distributed.tf_distribute``), registered as the world, with threads and seeds set."""
    from iapdcnn.distributed import tf_distribute

    try:
        workers, index = tf_distribute.cluster_from_env()
    except ValueError as e:
        raise ConfigError(f"--engine tf_distribute: {e}") from None
    local_rank, local_size = tf_distribute.local_rank_and_size(workers, index)
    # the threads and the GPU before the strategy, which starts TensorFlow's runtime
    _set_threads(cfg, local_size)
    pin_gpu(local_rank)
    try:
        return tf_distribute.init()
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _init_engine(cfg: TrainConfig):
    """``--engine``'s collectives (``horovod.tensorflow``, or tf.distribute's under the same
    names), initialised, with TensorFlow's threads and seeds set."""
    import tensorflow as tf

    if cfg.engine == "tf_distribute":
        hvd = _init_tf_distribute(cfg)
    else:
        try:
            import horovod.tensorflow as hvd
        except ImportError as e:
            raise SystemExit(
                "train.py needs Horovod (horovod.tensorflow), which is not available in this "
                f"installation ({type(e).__name__}: {e}); --engine tf_distribute runs without it."
            ) from None
        hvd.init()
        _set_threads(cfg, hvd.local_size())
        pin_gpu(hvd.local_rank())
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    tf.keras.utils.set_random_seed(cfg.seed)
    return hvd


def _prepare_features(cfg: TrainConfig, hvd, arrays):
    """MHO-PFES once, before the model is built (``features.prepare``): the arrays it makes and
    what it did (``info``)."""
    from .features import prepare

    def log(msg: str) -> None:
        if hvd.rank() == 0:
            print(msg, flush=True)

    key = f"{cfg.dataset}:{cfg.data_path or ''}" + (
        f":{cfg.seed}" if cfg.dataset == "synthetic" else ""
    )
    try:
        arrays, info = prepare(
            arrays,
            cfg.feature_settings(),
            cache_dir=cfg.features_cache,
            data_key=key,
            # --elastic: every rank prepares alone (from the cache if there is one), as a rank
            # that joins later must, since the others are training by then
            hvd=None if cfg.elastic else hvd,
            log=log,
        )
    except ValueError as e:  # a stale or damaged cache: the message names --features-cache
        raise ConfigError(str(e)) from None
    return arrays, info


def run(cfg: TrainConfig) -> dict:
    """Trains as ``cfg`` says; returns (on every rank) the final report dict. The trainer is
    tf_keras (Keras 2) code, as Horovod's Keras API is: call it before anything has made
    ``tf.keras`` Keras 3 in the process (``iapdcnn.use_tf_keras``)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import iapdcnn

    iapdcnn.use_tf_keras()
    from .build import load_arrays
    from .loop import Trainer

    try:
        hvd = _init_engine(cfg.check())
        arrays, prep = load_arrays(cfg), None
        if cfg.features_mode != "none" or cfg.fci_drop:
            arrays, prep = _prepare_features(cfg, hvd, arrays)
        trainer = Trainer(cfg, hvd, arrays, prep)
        trainer.restore_or_broadcast(broadcast=not cfg.elastic)
    except ConfigError as e:  # also the settings that only the data or world size show wrong,
        # and a checkpoint that --resume cannot use (checkpoint.CheckpointError names it)
        raise SystemExit(f"train.py: {e}") from None
    if cfg.elastic:  # the same epochs, driven by hvd.elastic's reset-and-retry (elastic.py)
        from .elastic import run_elastic

        return run_elastic(trainer)
    trainer.log.say(trainer.describe())
    for epoch in range(trainer.start_epoch, cfg.epochs):
        trainer.train_epoch(epoch)
    return trainer.finish()


def main(argv: list[str] | None = None) -> dict:
    """``train.py``: parses the flags (errors name the flag) and runs."""
    return run(parse_args(argv))
