"""The iapdcnn trainer (``train.py`` at the repository root calls ``main``): IA-PDCNNOA on one
machine or under ``horovodrun -np N``. MHO-PFES features (--features), MDCV pruning (--prune),
Im2col convolution (--conv im2col) and the LSG reduction (--reduction, SPEC 3), with broadcast
from rank 0, LR scaled by world size with warm-up, per-epoch JSON/TensorBoard/PNG, atomic
checkpoints and exact --resume, and fault injection for robustness demonstrations."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

FAULT_KINDS = ("nan", "scale", "loss_spike", "labels", "straggler")
REDUCTIONS = ("mean", "lsg", "dis_cnn", "median", "trimmed_mean")  # = distributed.REDUCTIONS
DATASETS = (
    "fashion_mnist",
    "mnist",
    "digits",
    "cifar10",
    "cifar100",
    "image_folder",
    "tfrecord",
    "synthetic",
)
CKPT = "checkpoint.npz"


@dataclass(frozen=True)
class Fault:
    """``--inject-fault RANK:KIND[:FROM_STEP]``."""

    rank: int
    kind: str
    from_step: int = 0

    def active(self, rank: int, step: int) -> bool:
        return rank == self.rank and step >= self.from_step


def parse_fault(text: str) -> Fault:
    """Parses ``RANK:KIND[:FROM_STEP]``; raises ``argparse.ArgumentTypeError`` saying why."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(
            f"--inject-fault wants RANK:KIND[:FROM_STEP], got {text!r}"
        )
    try:
        rank = int(parts[0])
        step = int(parts[2]) if len(parts) == 3 else 0
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--inject-fault: RANK and FROM_STEP must be integers, got {text!r}"
        ) from None
    if parts[1] not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(
            f"--inject-fault: KIND must be one of {', '.join(FAULT_KINDS)}, got {parts[1]!r}"
        )
    if rank < 0 or step < 0:
        raise argparse.ArgumentTypeError(
            f"--inject-fault: RANK and FROM_STEP must be >= 0: {text!r}"
        )
    return Fault(rank, parts[1], step)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py",
        description="IA-PDCNNOA trainer. Run as `python train.py ...` or "
        "`horovodrun -np N python train.py ...`.",
    )
    d = p.add_argument_group("data and model")
    d.add_argument("--dataset", default="fashion_mnist", choices=DATASETS)
    d.add_argument("--data-path", default=None, help="files for cifar*/image_folder/tfrecord")
    d.add_argument(
        "--model",
        default="auto",
        choices=("auto", "small_resnet", "resnet50"),
        help="auto: small_resnet below 64x64 inputs, ResNet-50 otherwise",
    )
    d.add_argument("--width", type=int, default=16, help="small_resnet width")
    d.add_argument("--blocks", type=int, default=1, help="small_resnet blocks per stage")
    d.add_argument(
        "--bn-momentum",
        type=float,
        default=None,
        help="override BatchNorm momentum (e.g. 0.9 for runs of a few hundred steps)",
    )
    d.add_argument("--conv", default="keras", choices=("keras", "im2col"))
    d.add_argument(
        "--features",
        action="store_true",
        help="MHO-PFES: EdgeFeatures + FCIFilter in front of the model",
    )
    d.add_argument(
        "--fci-epsilon",
        type=float,
        default=0.02,
        help="FCIFilter threshold (SPEC 1c scale, max 0.5). On Fashion-MNIST edge maps the "
        "per-position mean FCI has median ~0.05: 0.02 drops the ~4%% least class-typical block "
        "positions, the paper's 0.1 would drop ~92%%",
    )
    d.add_argument(
        "--prune",
        type=float,
        default=0.0,
        metavar="RATIO",
        help="MDCV pruning target ratio in [0, 1); 0 = off",
    )
    r = p.add_argument_group("reduction (SPEC 3)")
    r.add_argument("--reduction", default="lsg", choices=REDUCTIONS)
    r.add_argument("--tau", type=float, default=None, help="absolute LAW threshold (lsg)")
    r.add_argument("--kappa", type=float, default=4.0, help="relative threshold kappa*1.4826*MAD")
    r.add_argument("--centre", default="median", choices=("median", "mean"))
    r.add_argument("--normalise", default="kept", choices=("kept", "batch"))
    r.add_argument("--no-grad-screen", dest="grad_screen", action="store_false")
    r.add_argument("--grad-kappa", type=float, default=6.0)
    r.add_argument(
        "--se-kappa",
        type=float,
        default=8.0,
        help="lsg keeps any loss within this many standard errors of the centre",
    )
    r.add_argument("--dis-cnn-b", type=float, default=None, help="Dis-CNN loss threshold b")
    r.add_argument("--trim", type=float, default=0.25, help="trimmed_mean fraction per side")
    r.add_argument("--sample-law", action="store_true", help="per-sample LAW inside each batch")
    r.add_argument("--sample-kappa", type=float, default=4.0)
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--batch-size", type=int, default=64, help="per-rank batch size")
    t.add_argument("--steps-per-epoch", type=int, default=None, help="cap on steps per epoch")
    t.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    t.add_argument("--lr", type=float, default=0.05, help="learning rate of one rank")
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument(
        "--warmup-epochs", type=float, default=1.0, help="linear warm-up from lr to lr*world_size"
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--deterministic", action="store_true", help="TF op determinism")
    t.add_argument("--threads", type=int, default=0, help="TF intra-op threads (0: TF default)")
    t.add_argument("--eval-limit", type=int, default=None, help="evaluate on this many examples")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="runs/train", help="logs, metrics, plot and checkpoint")
    o.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    o.add_argument("--no-progress", action="store_true")
    o.add_argument("--log-every", type=int, default=20, help="TensorBoard step interval")
    o.add_argument(
        "--step-log",
        action="store_true",
        help="rank 0 writes steps.jsonl in --out: every step's per-worker losses, gradient "
        "norms, loss standard errors and LAW weights (lsg / dis_cnn)",
    )
    f = p.add_argument_group("fault injection")
    f.add_argument(
        "--inject-fault",
        type=parse_fault,
        action="append",
        default=[],
        metavar="RANK:KIND[:FROM_STEP]",
        help=f"KIND in {', '.join(FAULT_KINDS)}",
    )
    f.add_argument("--straggler-seconds", type=float, default=0.5)
    f.add_argument("--crash-at-step", type=int, default=None, help=argparse.SUPPRESS)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses and checks the flags; errors name the flag (argparse exits with status 2)."""
    p = build_parser()
    a = p.parse_args(argv)
    for name in ("epochs", "batch_size", "width", "blocks", "log_every"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if a.steps_per_epoch is not None and a.steps_per_epoch < 1:
        p.error(f"--steps-per-epoch must be >= 1, got {a.steps_per_epoch}")
    if a.eval_limit is not None and a.eval_limit < 1:
        p.error(f"--eval-limit must be >= 1, got {a.eval_limit}")
    if not a.lr > 0:
        p.error(f"--lr must be > 0, got {a.lr}")
    if a.warmup_epochs < 0:
        p.error(f"--warmup-epochs must be >= 0, got {a.warmup_epochs}")
    if a.bn_momentum is not None and not 0 <= a.bn_momentum < 1:
        p.error(f"--bn-momentum must be in [0, 1), got {a.bn_momentum}")
    if not 0 <= a.prune < 1:
        p.error(f"--prune is a ratio in [0, 1), got {a.prune}")
    if not 0.0 <= a.fci_epsilon <= 0.5:
        p.error(f"--fci-epsilon must be in [0, 0.5] (FCI's maximum is 0.5), got {a.fci_epsilon}")
    for name in ("kappa", "grad_kappa", "sample_kappa", "se_kappa"):
        if not getattr(a, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(a, name)}")
    if a.tau is not None and a.tau < 0:
        p.error(f"--tau must be >= 0, got {a.tau}")
    if not 0 <= a.trim < 0.5:
        p.error(f"--trim must be in [0, 0.5), got {a.trim}")
    if a.tau is not None and a.reduction != "lsg":
        p.error("--tau applies to --reduction lsg only")
    if a.dataset in ("cifar10", "cifar100", "image_folder", "tfrecord") and not a.data_path:
        p.error(f"--dataset {a.dataset} needs --data-path")
    return a


# ----------------------------------------------------------------------------- small helpers


def _atomic_write(path: str, write) -> None:
    """Writes through ``write(fileobj)`` into a temporary file, then renames it over ``path``."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_json(path: str, obj: Any) -> None:
    _atomic_write(path, lambda fh: fh.write(json.dumps(obj, indent=1).encode()))


def _missing(component: str, flag: str, err: Exception) -> SystemExit:
    return SystemExit(
        f"train.py: {flag} needs {component}, which is not available in this installation "
        f"({type(err).__name__}: {err})."
    )


def synthetic(n: int, seed: int, shape=(28, 28, 1), classes: int = 10):
    """A tiny learnable test set: class c is a bright square at a class-specific place + noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n).astype(np.int64)
    x = rng.uniform(0, 0.3, (n, *shape)).astype(np.float32)
    h, w = shape[0], shape[1]
    for c in range(classes):
        r0, c0 = (c // 4) * (h // 4), (c % 4) * (w // 4)
        x[y == c, r0 : r0 + h // 4, c0 : c0 + w // 4, :] += 0.7
    return x, y


def load_arrays(args) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Whole train and test splits as NumPy (the trainer shards them per epoch itself, so that
    a resumed run sees exactly the batches an uninterrupted run would)."""
    if args.dataset == "synthetic":
        xtr, ytr = synthetic(2048, args.seed)
        xte, yte = synthetic(512, args.seed + 1)
        return xtr, ytr, xte, yte
    from iapdcnn import data

    kw = dict(as_numpy=True, shard=False, shuffle=False, path=args.data_path)
    xtr, ytr = data.load(args.dataset, "train", **kw)
    xte, yte = data.load(args.dataset, "test", **kw)
    return xtr, ytr, xte, yte


def _all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _all_layers(layer)
        else:
            yield layer


def build_model(args, input_shape, num_classes, train_xy):
    import tensorflow as tf

    from iapdcnn import models

    kind = args.model
    if kind == "auto":
        kind = "small_resnet" if max(input_shape[:2]) < 64 else "resnet50"
    preprocessing = []
    if args.features:
        from iapdcnn.layers import EdgeFeatures, FCIFilter

        # MHO-PFES in front of the network (SPEC 1): denoise + edges, then the FCI block screen,
        # adapted on (this rank's part of) the training set and merged across ranks by an
        # allreduce. They sit inside the one flat model, so --prune still sees every conv.
        edges, fci = EdgeFeatures(), FCIFilter(epsilon=args.fci_epsilon)
        x, y = train_xy
        ds = tf.data.Dataset.from_tensor_slices((x[:4096], y[:4096])).batch(256)
        fci.adapt(ds.map(lambda a, b: (edges(a), b)))
        preprocessing = [edges, fci]
    if kind == "small_resnet":
        return models.small_resnet(
            input_shape,
            num_classes,
            width=args.width,
            blocks_per_stage=args.blocks,
            conv=args.conv,
            preprocessing=preprocessing,
        )
    return models.resnet50(input_shape, num_classes, conv=args.conv, preprocessing=preprocessing)


def make_pruner(args, steps_per_epoch: int):
    """MDCV soft pruning on a schedule (SPEC 2a): masks ramp up to the ``--prune`` FLOPs target
    over the first two thirds of training, then ``strip`` makes them physical."""
    from iapdcnn.pruning import MDCVPruning

    total = max(2, args.epochs * steps_per_epoch)
    return MDCVPruning(
        target_flops_reduction=args.prune,
        begin_step=0,
        end_step=max(1, (2 * total) // 3),
        frequency=max(1, steps_per_epoch // 4),
    )


def save_curves(path: str, history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, axis in (("loss", ax[0]), ("acc", ax[1])):
        axis.plot(ep, [h[key] for h in history], "o-", label=f"train {key}")
        axis.plot(ep, [h["val_" + key] for h in history], "s-", label=f"test {key}")
        axis.set_xlabel("epoch")
        axis.set_title(key)
        axis.legend()
    fig.tight_layout()
    _atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=90))
    plt.close(fig)


# ----------------------------------------------------------------------------- the trainer


def main(argv: list[str] | None = None) -> dict:
    """Runs the trainer; returns (on every rank) the final report dict."""
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        import horovod.tensorflow as hvd
    except ImportError as e:
        raise _missing("Horovod (horovod.tensorflow)", "train.py", e) from None

    from iapdcnn.distributed import loss_standard_error, lsg_loss, make_reduction, sample_law
    from iapdcnn.pruning import count_flops

    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    for f in args.inject_fault:
        if f.rank >= size:
            raise SystemExit(
                f"train.py: --inject-fault rank {f.rank} does not exist " f"(world size {size})"
            )
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    tf.keras.utils.set_random_seed(args.seed)
    chief = rank == 0
    os.makedirs(args.out, exist_ok=True)

    def say(msg: str) -> None:
        if chief:
            print(msg, flush=True)

    xtr, ytr, xte, yte = load_arrays(args)
    num_classes = int(max(ytr.max(), yte.max())) + 1
    model = build_model(args, xtr.shape[1:], num_classes, (xtr, ytr))
    if args.bn_momentum is not None:
        for layer in _all_layers(model):
            if isinstance(layer, tf.keras.layers.BatchNormalization):
                layer.momentum = args.bn_momentum
    flops_before = count_flops(model).total
    steps = len(xtr) // (size * args.batch_size)
    if steps < 1:
        raise SystemExit(
            f"train.py: --batch-size {args.batch_size} x {size} ranks exceeds the "
            f"{len(xtr)} training examples"
        )
    steps = min(steps, args.steps_per_epoch or steps)

    class WarmupScaled(tf.keras.optimizers.schedules.LearningRateSchedule):
        """lr -> lr * world size, linearly over the warm-up steps (Goyal et al.)."""

        def __call__(self, step):
            warm = max(args.warmup_epochs * steps, 1.0)
            frac = tf.minimum(tf.cast(step, tf.float32) / warm, 1.0)
            return args.lr * (1.0 + (size - 1) * frac)

        def get_config(self):
            return {}

    lr = WarmupScaled()
    opt = (
        tf.keras.optimizers.SGD(lr, momentum=args.momentum)
        if args.optimizer == "sgd"
        else tf.keras.optimizers.Adam(lr)
    )
    opt.build(model.trainable_variables)
    options: dict[str, Any] = {}
    if args.reduction == "lsg":
        options = dict(
            tau=args.tau,
            kappa=args.kappa,
            centre=args.centre,
            normalise=args.normalise,
            grad_screen=args.grad_screen,
            grad_kappa=args.grad_kappa,
            se_kappa=args.se_kappa,
        )
    elif args.reduction == "dis_cnn":
        options = dict(b=args.dis_cnn_b)
    elif args.reduction == "trimmed_mean":
        options = dict(trim=args.trim)
    reduction = make_reduction(args.reduction, **options)
    per_sample = tf.keras.losses.SparseCategoricalCrossentropy(
        reduction=tf.keras.losses.Reduction.NONE
    )

    # ---- state: fresh (broadcast from rank 0) or resumed from the checkpoint
    start_epoch, history = 0, []
    ckpt_path = os.path.join(args.out, CKPT)
    if args.resume and os.path.exists(ckpt_path):
        with np.load(ckpt_path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            model.set_weights([z[f"w_{i}"] for i in range(meta["n_weights"])])
            for i, v in enumerate(opt.variables):
                v.assign(z[f"o_{i}"])
        start_epoch, history = meta["epoch"] + 1, meta["history"]
        if meta["size"] != size:
            say(
                f"note: checkpoint was written with {meta['size']} ranks, now {size}: the "
                "batches differ, so the continuation is not exact"
            )
        say(f"resumed from {ckpt_path} after epoch {meta['epoch'] + 1}")
    elif args.resume:
        say(f"--resume: no checkpoint at {ckpt_path}, starting from scratch")
    hvd.broadcast_variables(model.variables, root_rank=0)
    hvd.broadcast_variables(opt.variables, root_rank=0)

    pruner = None
    if args.prune > 0:
        pruner = make_pruner(args, steps)
        model.optimizer = opt  # the callback reads the step from the optimizer, as under fit
        pruner.set_model(model)
        pruner.on_train_begin()

    grad_fault = {f.kind: f for f in args.inject_fault if f.kind in ("nan", "scale")}

    @tf.function(reduce_retracing=True)
    def train_step(x, y, gmul):
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            losses = per_sample(y, probs)
            if args.sample_law:
                law = sample_law(losses, kappa=args.sample_kappa)
                loss = lsg_loss(losses, law, args.normalise)
                kept = tf.reduce_sum(law)
            else:
                loss = tf.reduce_mean(losses)
                kept = tf.cast(tf.shape(losses)[0], tf.float32)
            total = loss + tf.add_n(model.losses) if model.losses else loss
        variables = model.trainable_variables
        grads = tape.gradient(total, variables)
        if grad_fault:
            grads = [g * tf.cast(gmul, g.dtype) for g in grads]
        se = loss_standard_error(losses)
        grads, stats = reduction(grads, loss, samples=kept, variables=variables, loss_se=se)
        skipped = stats["skipped"] > 0

        def apply():
            opt.apply_gradients(zip(grads, variables, strict=False))
            return tf.constant(True)

        tf.cond(skipped, lambda: tf.constant(False), apply)
        correct = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(probs, -1), tf.cast(y, tf.int64)), tf.float32)
        )
        out = {
            k: stats[k]
            for k in ("workers_kept", "samples_kept", "skipped", "loss", "loss_min", "loss_max")
        }
        out["local_loss"] = tf.reduce_mean(losses)
        out["correct"] = correct
        if args.step_log and "table" in stats:
            out["table"] = stats["table"]
            out["weights"] = stats["weights"]
        return out

    def make_eval_step(net):
        @tf.function(reduce_retracing=True)
        def eval_step(x, y):
            probs = net(x, training=False)
            loss = tf.reduce_sum(per_sample(y, probs))
            correct = tf.reduce_sum(
                tf.cast(tf.equal(tf.argmax(probs, -1), tf.cast(y, tf.int64)), tf.float32)
            )
            return loss, correct

        return eval_step

    eval_step = make_eval_step(model)

    def evaluate() -> tuple[float, float]:
        n = min(len(xte), args.eval_limit or len(xte))
        xs, ys = xte[rank:n:size], yte[rank:n:size]
        loss_sum = correct = 0.0
        for i in range(0, len(xs), 256):
            l_, c_ = eval_step(xs[i : i + 256], ys[i : i + 256])
            loss_sum, correct = loss_sum + float(l_), correct + float(c_)
        tot = hvd.allreduce(
            tf.constant([loss_sum, correct, float(len(xs))], tf.float64),
            op=hvd.Sum,
            name="eval_sums",
        ).numpy()
        return tot[0] / max(tot[2], 1), tot[1] / max(tot[2], 1)

    def sync_non_trainable() -> None:
        """BatchNorm statistics are rank-local: replace them by their median across ranks
        (robust to one faulty rank of three or more), so every rank evaluates and checkpoints
        the same model."""
        vs = model.non_trainable_variables
        if size == 1 or not vs:
            return
        flat = tf.concat([tf.reshape(tf.cast(v, tf.float32), [-1]) for v in vs], 0)
        table = hvd.allgather(flat[None], name="sync_non_trainable").numpy()
        med = np.median(table, axis=0)
        start = 0
        for v in vs:
            n = int(np.prod(v.shape))
            v.assign(med[start : start + n].reshape(v.shape).astype(v.dtype.as_numpy_dtype))
            start += n

    writer = tf.summary.create_file_writer(os.path.join(args.out, "tb")) if chief else None
    step_log = None
    if chief and args.step_log:
        step_log = open(os.path.join(args.out, "steps.jsonl"), "a")  # noqa: SIM115 - whole run
    say(
        f"iapdcnn train: {args.dataset} {xtr.shape[1:]} x{len(xtr)}, model {model.name} "
        f"({model.count_params()} params, {flops_before / 1e6:.1f} MFLOPs), ranks={size}, "
        f"reduction={args.reduction}, {steps} steps/epoch x {args.batch_size}/rank"
    )
    train_time = 0.0
    images = 0
    for epoch in range(start_epoch, args.epochs):
        perm = np.random.default_rng([args.seed, epoch]).permutation(len(xtr))
        bar = None
        if chief and not args.no_progress:
            bar = tf.keras.utils.Progbar(steps, stateful_metrics=["loss", "kept"])
        if pruner is not None:
            pruner.on_epoch_begin(epoch)
        acc_n = acc_kept = acc_samples = acc_skipped = acc_loss = acc_correct = 0.0
        t0 = time.perf_counter()
        for i in range(steps):
            gstep = epoch * steps + i
            if args.crash_at_step is not None and gstep == args.crash_at_step:
                print(f"rank {rank}: simulated crash at step {gstep}", flush=True)
                os._exit(3)
            idx = perm[
                (i * size + rank) * args.batch_size : (i * size + rank + 1) * args.batch_size
            ]
            x, y = xtr[idx], ytr[idx]
            gmul = 1.0
            for f in args.inject_fault:
                if not f.active(rank, gstep):
                    continue
                frng = np.random.default_rng([args.seed, 7, gstep, rank])
                if f.kind == "nan":
                    gmul = float("nan")
                elif f.kind == "scale":
                    gmul = -10.0
                elif f.kind == "loss_spike":  # corrupted inputs: heavy-tailed noise
                    x = (10.0 * frng.standard_cauchy(x.shape)).astype(np.float32)
                elif f.kind == "labels":
                    y = frng.permutation(y)
                elif f.kind == "straggler":
                    time.sleep(args.straggler_seconds)
            res = train_step(x, y, tf.constant(gmul))
            if step_log is not None and "table" in res:
                t, w = res.pop("table").numpy(), res.pop("weights").numpy()
                cols = {"loss": t[:, 0], "norm": t[:, 1], "se": t[:, 4], "law": w}
                # Strict JSON: a faulty worker's NaN/inf scalars are written as null.
                rec = {
                    k: [float(u) if np.isfinite(u) else None for u in np.round(v, 5)]
                    for k, v in cols.items()
                }
                step_log.write(json.dumps({"step": gstep, **rec}, allow_nan=False) + "\n")
            st = {k: float(v) for k, v in res.items() if k not in ("table", "weights")}
            acc_n += 1
            acc_kept += st["workers_kept"]
            acc_samples += st["samples_kept"]
            acc_skipped += st["skipped"]
            acc_correct += st["correct"]
            if st["skipped"]:
                say(
                    f"step {gstep}: skipped, every worker rejected (finite losses "
                    f"{st['loss_min']:.4g}..{st['loss_max']:.4g})"
                )
            else:
                acc_loss += st["loss"]
            if bar is not None:
                bar.update(i + 1, [("loss", st["loss"]), ("kept", st["workers_kept"])])
            if writer is not None and gstep % args.log_every == 0:
                with writer.as_default(step=gstep):
                    for k in ("loss", "workers_kept", "samples_kept", "skipped"):
                        tf.summary.scalar(f"step/{k}", st[k])
            if pruner is not None:
                pruner.on_train_batch_end(i)
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time
        images += steps * args.batch_size * size
        sync_non_trainable()
        if pruner is not None:
            pruner.on_epoch_end(epoch)
        train_acc = float(
            hvd.allreduce(
                tf.constant(acc_correct / (steps * args.batch_size)),
                op=hvd.Average,
                name="train_acc",
            )
        )
        val_loss, val_acc = evaluate()
        kept_steps = acc_n - acc_skipped
        rec = {
            "epoch": epoch + 1,
            "loss": acc_loss / kept_steps if kept_steps else float("nan"),
            "acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "workers_kept_mean": acc_kept / acc_n,
            "samples_kept_mean": acc_samples / acc_n,
            "skipped_steps": int(acc_skipped),
            "lr": float(lr(opt.iterations)),
            "epoch_s": epoch_time,
            "images_per_s": steps * args.batch_size * size / epoch_time,
        }
        history.append(rec)
        say(
            f"epoch {epoch + 1}/{args.epochs}: loss {rec['loss']:.4f} acc {train_acc:.4f} "
            f"val_loss {val_loss:.4f} val_acc {val_acc:.4f} workers_kept "
            f"{rec['workers_kept_mean']:.2f}/{size} skipped {rec['skipped_steps']} "
            f"{rec['images_per_s']:.0f} img/s"
        )
        if chief:
            with writer.as_default(step=epoch + 1):
                for k, v in rec.items():
                    if k != "epoch":
                        tf.summary.scalar(f"epoch/{k}", v)
            writer.flush()
            _atomic_json(os.path.join(args.out, "metrics.json"), history)
            weights = model.get_weights()
            arrays = {f"w_{i}": w for i, w in enumerate(weights)}
            arrays.update({f"o_{i}": v.numpy() for i, v in enumerate(opt.variables)})
            meta = {"epoch": epoch, "n_weights": len(weights), "history": history, "size": size}
            arrays["meta"] = np.array(json.dumps(meta))
            _atomic_write(ckpt_path, lambda fh, a=arrays: np.savez(fh, **a))
            save_curves(os.path.join(args.out, "curves.png"), history)

    if step_log is not None:
        step_log.close()
    flops_after = flops_before
    if pruner is not None:
        from iapdcnn.pruning import strip

        pruner.on_train_end()
        model = strip(model)  # physical: fewer filters, the same function as the masked model
        flops_after = count_flops(model).total
        eval_step = make_eval_step(model)
    val_loss, val_acc = evaluate()
    report = {
        "dataset": args.dataset,
        "ranks": size,
        "reduction": args.reduction,
        "epochs": args.epochs,
        "test_loss": val_loss,
        "test_accuracy": val_acc,
        "train_images_per_s": images / train_time if train_time else None,
        "flops_before": flops_before,
        "flops_after": flops_after,
        "flops_saved": 1.0 - flops_after / flops_before if flops_before else 0.0,
        "faults": [f"{f.rank}:{f.kind}:{f.from_step}" for f in args.inject_fault],
        "history": history,
    }
    if chief:
        _atomic_json(os.path.join(args.out, "report.json"), report)
        ips = report["train_images_per_s"]
        print(
            f"ranks={size} reduction={args.reduction} test_accuracy={val_acc:.4f} "
            f"train_images/s={ips if ips is None else round(ips)} "
            f"flops_saved={report['flops_saved']:.1%} report={args.out}/report.json "
            f"plot={args.out}/curves.png",
            flush=True,
        )
    return report


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
