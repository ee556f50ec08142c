"""The tf.distribute engine: Horovod's collectives (rank, size, allreduce, allgather, broadcast)
built on a ``tf.distribute`` strategy's own cross-worker collectives, so that the trainer and
every reduction (LSG's allgather of the per-worker scalars and allreduce of the weighted
gradients included) run unchanged without Horovod. ``init()`` makes the strategy
(``MultiWorkerMirroredStrategy`` for the workers ``TF_CONFIG`` names, one process each;
``MirroredStrategy`` on one device for a lone process) and registers the collectives with
``iapdcnn.world``, where ``reduction._hvd`` finds them. ``python -m iapdcnn.tfrun`` starts the
local workers."""

from __future__ import annotations

import functools
import json
import os
import pickle
from typing import Any

import numpy as np
import tensorflow as tf

STRATEGIES = ("MultiWorkerMirroredStrategy", "MirroredStrategy")


def cluster_from_env(env: dict[str, str] | None = None) -> tuple[list[str], int]:
    """``(worker addresses, this worker's index)`` from ``TF_CONFIG``; ``([], 0)`` without it.

    Raises:
      ValueError: ``TF_CONFIG`` is not JSON with ``cluster.worker`` and a worker ``task``.
    """
    text = (os.environ if env is None else env).get("TF_CONFIG", "")
    if not text.strip():
        return [], 0
    try:
        cfg = json.loads(text)
        workers = list(cfg["cluster"]["worker"])
        task = cfg.get("task", {})
        if task.get("type", "worker") != "worker":
            raise ValueError(f"task type {task.get('type')!r}: only 'worker' tasks are run")
        index = int(task.get("index", 0))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"TF_CONFIG must be JSON like {{'cluster': {{'worker': ['host:port', ...]}}, "
            f"'task': {{'type': 'worker', 'index': i}}}} ({type(e).__name__}: {e})"
        ) from None
    if not 0 <= index < len(workers):
        raise ValueError(f"TF_CONFIG: task index {index} outside the {len(workers)} workers")
    return workers, index


def local_rank_and_size(workers: list[str], index: int) -> tuple[int, int]:
    """Worker ``index``'s place among the workers on its host, and their number (``(0, 1)``
    without a cluster): Horovod's ``local_rank`` and ``local_size``."""
    if not workers:
        return 0, 1
    host = workers[index].rsplit(":", 1)[0]
    local = [i for i, w in enumerate(workers) if w.rsplit(":", 1)[0] == host]
    return local.index(index), len(local)


def make_strategy(env: dict[str, str] | None = None) -> tf.distribute.Strategy:
    """``MultiWorkerMirroredStrategy`` (ring collectives over gRPC) when ``TF_CONFIG`` names
    more than one worker, else ``MirroredStrategy`` on this process's first device. Call it
    before TensorFlow has run anything (the strategy configures the runtime)."""
    workers, _ = cluster_from_env(env)
    if len(workers) > 1:
        comm = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING
        )
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=comm)
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy([(gpus or tf.config.list_logical_devices("CPU"))[0].name])


class StrategyCollectives:
    """Horovod's collective API over ``strategy``, for a strategy with one replica per process
    (a worker is a rank, as under ``horovodrun``). Each collective runs as ``strategy.run`` of
    the replica context's ``all_reduce`` / ``all_gather``, eagerly or inside a ``tf.function``;
    every worker must call the same collectives in the same order, as with Horovod.

    Args:
      strategy: a ``MultiWorkerMirroredStrategy`` or a ``MirroredStrategy`` on one device.
      env: the environment to read ``TF_CONFIG`` from (this process's by default).

    Raises:
      ValueError: the strategy has several replicas in this process.
    """

    Sum, Average, Max = "sum", "average", "max"

    def __init__(self, strategy: tf.distribute.Strategy, env: dict[str, str] | None = None):
        devices = list(strategy.extended.worker_devices)
        if len(devices) != 1:
            raise ValueError(
                f"--engine tf_distribute runs one replica per process (as a Horovod rank), but "
                f"this process has {len(devices)} devices ({', '.join(devices)}): start one "
                "worker per device with `python -m iapdcnn.tfrun -np N ...` and give each one "
                "device (CUDA_VISIBLE_DEVICES)"
            )
        self.strategy, self._device = strategy, devices[0]
        self._compiled: dict[tuple, Any] = {}  # (kind, structure, dtypes and ranks) -> function
        workers, index = cluster_from_env(env)
        self._rank = index  # MWMS numbers its replicas by task index, as TF_CONFIG lists them
        self._size = int(strategy.num_replicas_in_sync)
        self._local_rank, self._local_size = local_rank_and_size(workers, index)

    # --------------------------------------------------------------- Horovod's names
    def is_initialized(self) -> bool:
        return True

    def rank(self) -> int:
        return self._rank

    def size(self) -> int:
        return self._size

    def local_rank(self) -> int:
        return self._local_rank

    def local_size(self) -> int:
        return self._local_size

    @property
    def name(self) -> str:
        return type(self.strategy).__name__

    def _replica(self, kind: str, value: Any) -> Any:
        """The collective ``kind`` (``gather`` on axis 0, ``sum``, ``average``) of ``value`` in
        the replica context of this process's one replica."""

        def replica(v):
            with tf.device(self._device):  # graph tensors may carry no device; collectives need one
                v = tf.nest.map_structure(tf.identity, v)
            ctx = tf.distribute.get_replica_context()
            if kind == "gather":
                return ctx.all_gather(v, axis=0)
            op = tf.distribute.ReduceOp.SUM if kind == self.Sum else tf.distribute.ReduceOp.MEAN
            return ctx.all_reduce(op, v)

        return self.strategy.run(replica, args=(value,))

    def _run(self, kind: str, value: Any) -> Any:
        """``_replica(kind, value)``; called eagerly, it runs in a ``tf.function`` kept per kind,
        dtypes and ranks (shapes left open), since TensorFlow runs an eager collective as a new
        function each time (a retrace per call). Each worker traces the same functions in the
        same order as long as the workers call the same collectives, so their keys agree."""
        if not tf.executing_eagerly():
            return self._replica(kind, value)
        value = tf.nest.map_structure(tf.convert_to_tensor, value)
        key = (kind, repr(tf.nest.map_structure(lambda t: (t.dtype.name, t.shape.rank), value)))
        fn = self._compiled.get(key)
        if fn is None:
            spec = tf.nest.map_structure(
                lambda t: tf.TensorSpec([None] * t.shape.rank, t.dtype), value
            )
            # a partial, not a lambda: TensorFlow counts the traces of all functions made from
            # one code object together, and would call these one function retracing
            fn = tf.function(functools.partial(self._replica, kind), input_signature=[spec])
            self._compiled[key] = fn
        return fn(value)

    @staticmethod
    def _no_process_set(process_set: Any) -> None:
        if process_set is not None:
            raise ValueError("process_set: the tf.distribute engine has only the global set")

    def _op(self, op: Any) -> str:
        op = self.Average if op is None else op
        if op not in (self.Sum, self.Average, self.Max):
            raise ValueError(
                f"op must be Sum, Average or Max of the tf.distribute engine, got {op!r}"
            )
        return op

    def grouped_allreduce(
        self, tensors: list, op: Any = None, name: str | None = None, process_set: Any = None
    ) -> list[tf.Tensor]:
        """Every tensor of ``tensors`` summed / averaged / maximised over the workers."""
        self._no_process_set(process_set)
        op = self._op(op)
        tensors = [tf.convert_to_tensor(t) for t in tensors]
        if op == self.Max:
            return [tf.reduce_max(self.allgather(t[None]), axis=0) for t in tensors]
        out: list = [None] * len(tensors)
        by_dtype: dict[tf.DType, list[int]] = {}  # one collective per dtype: TF packs a batch
        for i, t in enumerate(tensors):
            by_dtype.setdefault(t.dtype, []).append(i)
        for idx in by_dtype.values():
            for i, r in zip(idx, self._run(op, [tensors[i] for i in idx]), strict=True):
                out[i] = r
        return out

    def allreduce(
        self, tensor: Any, op: Any = None, name: str | None = None, process_set: Any = None
    ) -> tf.Tensor:
        """``tensor`` summed / averaged (the default, as Horovod's) / maximised over the
        workers."""
        return self.grouped_allreduce([tensor], op=op, name=name, process_set=process_set)[0]

    def allgather(self, tensor: Any, name: str | None = None, process_set: Any = None) -> tf.Tensor:
        """Every worker's ``tensor`` concatenated along axis 0, in rank order."""
        self._no_process_set(process_set)
        tensor = tf.convert_to_tensor(tensor)
        return self._run("gather", tensor)

    def broadcast_variables(self, variables: list, root_rank: int = 0) -> None:
        """Every variable set to ``root_rank``'s value: one gather per dtype."""
        by_dtype: dict[tf.DType, list] = {}
        for v in variables:
            by_dtype.setdefault(v.dtype.base_dtype, []).append(v)
        for dtype, vs in by_dtype.items():
            wire = tf.int32 if dtype == tf.bool else dtype
            flat = tf.concat([tf.reshape(tf.cast(v, wire), [-1]) for v in vs], 0)
            root = self.allgather(flat[None])[root_rank]
            start = 0
            for v in vs:
                n = int(np.prod(v.shape))
                v.assign(tf.cast(tf.reshape(root[start : start + n], v.shape), dtype))
                start += n

    def _gather_bytes(self, data: bytes) -> list[bytes]:
        """Every worker's ``data`` (as int32 words: the collectives carry no bytes)."""
        sizes = self.allgather(tf.constant([len(data)], tf.int64)).numpy()
        words = int(-(-int(sizes.max()) // 4))
        buf = np.zeros(words * 4, np.uint8)
        buf[: len(data)] = np.frombuffer(data, np.uint8)
        rows = self.allgather(tf.constant(buf.view(np.int32)[None])).numpy()
        return [rows[k].view(np.uint8)[: int(sizes[k])].tobytes() for k in range(len(sizes))]

    def allgather_object(self, obj: Any, name: str | None = None) -> list[Any]:
        """Every worker's ``obj`` (pickled), in rank order."""
        return [pickle.loads(b) for b in self._gather_bytes(pickle.dumps(obj))]

    def broadcast_object(self, obj: Any, root_rank: int = 0, name: str | None = None) -> Any:
        """``root_rank``'s ``obj`` (pickled) on every worker."""
        mine = pickle.dumps(obj) if self._rank == root_rank else b""
        return pickle.loads(self._gather_bytes(mine)[root_rank])


def init(env: dict[str, str] | None = None) -> StrategyCollectives:
    """Makes the strategy (``make_strategy``) and registers its collectives as this process's
    world (``iapdcnn.world.use_engine``), so that ``make_reduction`` and the trainer use them;
    returns them."""
    from iapdcnn import world

    comm = StrategyCollectives(make_strategy(env), env)
    world.use_engine(comm)
    return comm
