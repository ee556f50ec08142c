"""The trainer's settings: one ``TrainConfig`` dataclass, the ``train.py`` flags that fill it, and
its checks. Every rule about a flag lives here; a bad value raises ``ConfigError`` naming the flag
(``parse_args`` turns that into argparse's usage error, exit status 2)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .faults import FAULT_KINDS, Fault, parse_fault

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
NEEDS_PATH = ("cifar10", "cifar100", "image_folder", "tfrecord")
SCHEDULES = ("cosine", "step", "constant")  # = schedules.SCHEDULES (no TensorFlow here)
OPTIMIZERS = ("sgd", "adam", "cgmse")
SYNCS = ("step", "agwu")
ENGINES = ("horovod", "tf_distribute")
INITS = ("he", "kmeans")
PRUNE_MODES = ("early", "soft")
PRUNE_CRITERIA = ("mdcv", "l1", "fpgm", "fmp", "fm_redundancy", "random")  # = pruning.CRITERIA


@dataclass
class TrainConfig:
    """Everything one training run is told; field names are the flags' (``--batch-size`` ->
    ``batch_size``). Build it with ``parse_args`` or directly, then ``check()``."""

    # data and model
    dataset: str = "fashion_mnist"
    data_path: str | None = None
    model: str = "auto"
    width: int = 16
    blocks: int = 1
    init: str = "he"
    bn_momentum: float | None = None
    conv: str = "keras"
    features: bool = False
    fci_epsilon: float = 0.02
    features_mode: str = "none"
    fci_drop: float = 0.0
    features_cache: str | None = None
    prune: float = 0.0
    prune_mode: str = "early"
    prune_at: float = 0.1
    prune_end: float = 2 / 3
    prune_criterion: str = "mdcv"
    prune_round_to: int = 8
    # reduction (spec §3)
    reduction: str = "lsg"
    sync: str = "step"
    local_steps: int = 8
    balance: bool = False
    balance_every: int = 50
    tau: float | None = None
    kappa: float = 4.0
    centre: str = "median"
    normalise: str = "kept"
    grad_screen: bool = True
    grad_kappa: float = 6.0
    se_kappa: float = 8.0
    direction: str = "reputation"
    dir_kappa: float = 5.0
    lsg_rounds: str = "one"
    dis_cnn_b: float | None = None
    trim: float = 0.25
    sample_law: bool = False
    sample_kappa: float = 4.0
    # training
    engine: str = "horovod"
    epochs: int = 2
    batch_size: int = 64
    steps_per_epoch: int | None = None
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    lr_schedule: str = "cosine"
    seed: int = 0
    deterministic: bool = False
    threads: int = 0
    eval_limit: int | None = None
    eval_every: int | None = None
    targets: tuple[float, ...] = (0.88, 0.90, 0.91)
    # output
    out: str = "runs/train"
    resume: bool = False
    no_progress: bool = False
    log_every: int = 20
    step_log: bool = False
    # fault injection and test hooks
    inject_fault: list[Fault] = field(default_factory=list)
    straggler_seconds: float = 0.5
    # elastic Horovod (training/elastic.py)
    elastic: bool = False
    commit_every: int = 10
    evict_after: int | None = None
    min_ranks: int = 1

    def check(self) -> TrainConfig:
        """Raises ``ConfigError`` naming the flag of the first bad setting; returns self."""

        def bad(flag: str, rule: str, value: Any) -> ConfigError:
            return ConfigError(f"--{flag} {rule}, got {value}")

        if self.threads < 0:
            raise bad("threads", "must be >= 0", self.threads)
        for name in (
            "epochs",
            "batch_size",
            "width",
            "blocks",
            "log_every",
            "prune_round_to",
            "local_steps",
            "balance_every",
        ):
            if getattr(self, name) < 1:
                raise bad(name.replace("_", "-"), "must be >= 1", getattr(self, name))
        if self.balance and self.sync != "step":
            raise ConfigError("--balance sizes the per-step batches of --sync step, not agwu")
        for name in ("steps_per_epoch", "eval_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise bad(name.replace("_", "-"), "must be >= 1", getattr(self, name))
        if not self.lr > 0:
            raise bad("lr", "must be > 0", self.lr)
        if self.warmup_epochs < 0:
            raise bad("warmup-epochs", "must be >= 0", self.warmup_epochs)
        if self.bn_momentum is not None and not 0 <= self.bn_momentum < 1:
            raise bad("bn-momentum", "must be in [0, 1)", self.bn_momentum)
        if not 0 <= self.prune < 1:
            raise bad("prune", "is a ratio in [0, 1)", self.prune)
        if self.prune_mode not in PRUNE_MODES:
            raise bad("prune-mode", f"must be one of {', '.join(PRUNE_MODES)}", self.prune_mode)
        if not 0 <= self.prune_at < 1:
            raise bad("prune-at", "is a fraction of the run's steps in [0, 1)", self.prune_at)
        if not 0 < self.prune_end <= 1:
            raise bad("prune-end", "is a fraction of the run's steps in (0, 1]", self.prune_end)
        if self.prune_mode == "soft" and self.prune_at >= self.prune_end:
            raise ConfigError(
                f"--prune-at ({self.prune_at}) must come before --prune-end ({self.prune_end}): "
                "soft pruning ramps its masks up between the two"
            )
        if self.prune_criterion not in PRUNE_CRITERIA:
            raise bad(
                "prune-criterion",
                f"must be one of {', '.join(PRUNE_CRITERIA)}",
                self.prune_criterion,
            )
        if self.lr_schedule not in SCHEDULES:
            raise bad("lr-schedule", f"must be one of {', '.join(SCHEDULES)}", self.lr_schedule)
        if self.eval_every is not None and self.eval_every < 1:
            raise bad("eval-every", "must be >= 1", self.eval_every)
        if not self.targets or any(not 0 < t <= 1 for t in self.targets):
            raise bad("targets", "must be accuracies in (0, 1]", list(self.targets))
        if not 0.0 <= self.fci_epsilon <= 0.5:
            raise bad("fci-epsilon", "must be in [0, 0.5] (FCI's maximum is 0.5)", self.fci_epsilon)
        for name in ("kappa", "grad_kappa", "sample_kappa", "se_kappa", "dir_kappa"):
            if not getattr(self, name) > 0:
                raise bad(name.replace("_", "-"), "must be > 0", getattr(self, name))
        if self.tau is not None and self.tau < 0:
            raise bad("tau", "must be >= 0", self.tau)
        if not 0 <= self.trim < 0.5:
            raise bad("trim", "must be in [0, 0.5)", self.trim)
        if not 0 <= self.straggler_seconds <= 3600:
            raise bad("straggler-seconds", "must be in [0, 3600]", self.straggler_seconds)
        if self.tau is not None and self.reduction != "lsg":
            raise ConfigError("--tau applies to --reduction lsg only")
        if self.dataset in NEEDS_PATH and not self.data_path:
            raise ConfigError(f"--dataset {self.dataset} needs --data-path")
        if self.features_mode != "none" or self.fci_drop:
            if self.features:
                raise ConfigError(
                    "--features (in the model) and --features-mode exclude each other"
                )
            try:
                self.feature_settings().check()
            except ValueError as e:
                raise ConfigError(str(e)) from None
        for name, choices in (
            ("dataset", DATASETS),
            ("reduction", REDUCTIONS),
            ("engine", ENGINES),
        ):
            if getattr(self, name) not in choices:
                raise bad(name, f"must be one of {', '.join(choices)}", getattr(self, name))
        self._check_elastic()
        if self.engine == "tf_distribute" and self.elastic:
            raise ConfigError(
                "--elastic is Horovod's elastic mode: --engine tf_distribute does not support it "
                "(use --engine horovod)"
            )
        return self

    def _check_elastic(self) -> None:
        """The rules of ``--elastic``, ``--commit-every`` and ``--evict-after``."""
        if self.commit_every < 1:
            raise ConfigError(f"--commit-every must be >= 1, got {self.commit_every}")
        if self.evict_after is not None:
            if self.evict_after < 1:
                raise ConfigError(f"--evict-after must be >= 1, got {self.evict_after}")
            if not self.elastic:
                raise ConfigError(
                    "--evict-after needs --elastic: only an elastic job can go on without a rank"
                )
            if self.reduction != "lsg" or self.sync != "step":
                raise ConfigError(
                    f"--evict-after needs --reduction lsg with --sync step (LSG's weights say "
                    f"which rank is rejected), got --reduction {self.reduction} --sync {self.sync}"
                )
        if self.min_ranks < 1:
            raise ConfigError(f"--min-ranks must be >= 1, got {self.min_ranks}")
        if self.elastic and self.sync == "agwu" and self.commit_every % self.local_steps:
            raise ConfigError(
                f"--elastic --sync agwu needs --commit-every a multiple of --local-steps (a "
                f"commit must follow a merge), got {self.commit_every} and {self.local_steps}"
            )

    def feature_settings(self) -> Any:
        """``--features-mode`` and ``--fci-drop`` as ``features.FeatureSettings`` (imports
        TensorFlow: the edge settings' defaults are ``EdgeFeatures``')."""
        from .features import FeatureSettings

        return FeatureSettings(mode=self.features_mode, fci_drop=self.fci_drop)

    def reduction_options(self) -> dict[str, Any]:
        """The options of ``--reduction`` for ``distributed.make_reduction``."""
        if self.reduction == "lsg":
            return dict(
                tau=self.tau,
                kappa=self.kappa,
                centre=self.centre,
                normalise=self.normalise,
                grad_screen=self.grad_screen,
                grad_kappa=self.grad_kappa,
                se_kappa=self.se_kappa,
                direction=self.direction,
                dir_kappa=self.dir_kappa,
                rounds=self.lsg_rounds,
            )
        if self.reduction == "dis_cnn":
            return dict(b=self.dis_cnn_b)
        if self.reduction == "trimmed_mean":
            return dict(trim=self.trim)
        return {}


def _accuracies(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--targets wants numbers like 0.9,0.91, got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    """The ``train.py`` flags; defaults come from ``TrainConfig``."""
    D = TrainConfig()
    p = argparse.ArgumentParser(
        prog="train.py",
        description="IA-PDCNNOA trainer. Run as `python train.py ...` or "
        "`horovodrun -np N python train.py ...`.",
    )
    d = p.add_argument_group("data and model")
    d.add_argument("--dataset", default=D.dataset, choices=DATASETS)
    d.add_argument(
        "--data-path", default=D.data_path, help="files for cifar*/image_folder/tfrecord"
    )
    d.add_argument(
        "--model",
        default=D.model,
        choices=("auto", "small_resnet", "resnet50"),
        help="auto: small_resnet below 64x64 inputs, ResNet-50 otherwise",
    )
    d.add_argument("--width", type=int, default=D.width, help="small_resnet width")
    d.add_argument("--blocks", type=int, default=D.blocks, help="small_resnet blocks per stage")
    d.add_argument(
        "--init",
        default=D.init,
        choices=INITS,
        help="conv kernels: he (He-normal) or kmeans (Dis-CNN: the central taps from k-means "
        "centres of the patches entering each conv, on 2048 training images; its time is counted "
        "in the training clock; iapdcnn.initializers.kmeans_init)",
    )
    d.add_argument(
        "--bn-momentum",
        type=float,
        default=D.bn_momentum,
        help="override BatchNorm momentum (e.g. 0.9 for runs of a few hundred steps)",
    )
    d.add_argument("--conv", default=D.conv, choices=("keras", "im2col"))
    d.add_argument(
        "--features",
        action="store_true",
        help="MHO-PFES: EdgeFeatures + FCIFilter in front of the model",
    )
    d.add_argument(
        "--fci-epsilon",
        type=float,
        default=D.fci_epsilon,
        help="FCIFilter threshold (spec §1c scale, max 0.5). On Fashion-MNIST edge maps the "
        "per-position mean FCI has median ~0.05: 0.02 drops the ~4%% least class-typical block "
        "positions, 0.1 would drop ~92%% (the paper gives no value)",
    )
    d.add_argument(
        "--features-mode",
        default=D.features_mode,
        choices=("none", "channels", "replace"),
        help="MHO-PFES computed once before training: channels = [image, edge map] stacked, "
        "replace = the edge map alone (the paper's form)",
    )
    d.add_argument(
        "--fci-drop",
        type=float,
        default=D.fci_drop,
        metavar="FRACTION",
        help="FCI data pruning: drop this fraction of each class's most prototypical training "
        "images (highest mean block FCI with the class prototype), in [0, 1)",
    )
    d.add_argument(
        "--features-cache",
        default=D.features_cache,
        metavar="DIR",
        help="keep the computed features here and reuse them (one verified .npz per data and "
        "settings); none: compute on every run",
    )
    d.add_argument(
        "--prune",
        type=float,
        default=D.prune,
        metavar="RATIO",
        help="filter pruning: the fraction of the model's FLOPs to remove, in [0, 1); 0 = off",
    )
    d.add_argument(
        "--prune-mode",
        default=D.prune_mode,
        choices=PRUNE_MODES,
        help="early: cut the filters physically once, at --prune-at, and train the smaller model "
        "from there (default); soft: mask them on a schedule from --prune-at to --prune-end "
        "and cut at the end (TF-MOT's way)",
    )
    d.add_argument(
        "--prune-at",
        type=float,
        default=D.prune_at,
        metavar="FRACTION",
        help="when pruning starts, as a fraction of the run's steps",
    )
    d.add_argument(
        "--prune-end",
        type=float,
        default=D.prune_end,
        metavar="FRACTION",
        help="soft mode: when the masks reach the target, as a fraction of the run's steps",
    )
    d.add_argument(
        "--prune-round-to",
        type=int,
        default=D.prune_round_to,
        metavar="N",
        help="every pruned layer keeps a multiple of N filters (8: what vectorised convolution "
        "kernels want; 1: any count)",
    )
    d.add_argument(
        "--prune-criterion",
        default=D.prune_criterion,
        choices=PRUNE_CRITERIA,
        help="filter score (mdcv: the paper's Mahalanobis distance, spec §2a)",
    )
    r = p.add_argument_group("reduction (spec §3)")
    r.add_argument("--reduction", default=D.reduction, choices=REDUCTIONS)
    r.add_argument(
        "--sync",
        default=D.sync,
        choices=SYNCS,
        help="step: reduce the gradients every step (--reduction); agwu: BPT-CNN's outer-layer "
        "parallelism as local SGD, each rank trains alone for --local-steps, then the copies are "
        "merged weighted by their accuracy (synchronously: Horovod has no parameter server for "
        "BPT-CNN's asynchrony); --reduction is then unused",
    )
    r.add_argument("--local-steps", type=int, default=D.local_steps, help="--sync agwu's round")
    r.add_argument(
        "--balance",
        action="store_true",
        help="LBRLA/IDPA load balancing: each rank's share of the global batch follows its "
        "measured compute speed (re-estimated every --balance-every steps), its gradient "
        "weighted by its share",
    )
    r.add_argument("--balance-every", type=int, default=D.balance_every)
    r.add_argument("--tau", type=float, default=D.tau, help="absolute LAW threshold (lsg)")
    r.add_argument(
        "--kappa", type=float, default=D.kappa, help="relative threshold kappa*1.4826*MAD"
    )
    r.add_argument("--centre", default=D.centre, choices=("median", "mean"))
    r.add_argument("--normalise", default=D.normalise, choices=("kept", "batch"))
    r.add_argument("--no-grad-screen", dest="grad_screen", action="store_false")
    r.add_argument("--grad-kappa", type=float, default=D.grad_kappa)
    r.add_argument(
        "--se-kappa",
        type=float,
        default=D.se_kappa,
        help="lsg keeps any loss within this many standard errors of the centre",
    )
    r.add_argument(
        "--direction",
        default=D.direction,
        choices=("reputation", "off"),
        help="lsg's direction screen for faults whose loss looks normal (off: loss and norm only)",
    )
    r.add_argument("--dir-kappa", type=float, default=D.dir_kappa, help="its margin (std errors)")
    r.add_argument(
        "--lsg-rounds",
        default=D.lsg_rounds,
        choices=("one", "two"),
        help="lsg: one allreduce with the scalars riding along, a second only when a finite "
        "worker is rejected (default); two: allgather the scalars, then the allreduce",
    )
    r.add_argument("--dis-cnn-b", type=float, default=D.dis_cnn_b, help="Dis-CNN loss threshold b")
    r.add_argument("--trim", type=float, default=D.trim, help="trimmed_mean fraction per side")
    r.add_argument("--sample-law", action="store_true", help="per-sample LAW inside each batch")
    r.add_argument("--sample-kappa", type=float, default=D.sample_kappa)
    t = p.add_argument_group("training")
    t.add_argument(
        "--engine",
        default=D.engine,
        choices=ENGINES,
        help="horovod: run under horovodrun (default); tf_distribute: TensorFlow's tf.distribute "
        "(MultiWorkerMirroredStrategy, one process per worker from TF_CONFIG: start them with "
        "`python -m iapdcnn.tfrun -np N python train.py ...`; MirroredStrategy on one device "
        "for a lone process), the same loop and reductions on its collectives",
    )
    t.add_argument("--epochs", type=int, default=D.epochs)
    t.add_argument("--batch-size", type=int, default=D.batch_size, help="per-rank batch size")
    t.add_argument("--steps-per-epoch", type=int, default=None, help="cap on steps per epoch")
    t.add_argument(
        "--optimizer",
        default=D.optimizer,
        choices=OPTIMIZERS,
        help="sgd (with --momentum), adam, or cgmse (PDCNNO's conjugate gradient with a modified "
        "secant equation, iapdcnn.optimizers.CGMSE; --lr caps its step)",
    )
    t.add_argument("--lr", type=float, default=D.lr, help="learning rate of one rank")
    t.add_argument("--momentum", type=float, default=D.momentum)
    t.add_argument(
        "--warmup-epochs",
        type=float,
        default=D.warmup_epochs,
        help="linear warm-up from lr to lr*world_size",
    )
    t.add_argument(
        "--lr-schedule",
        default=D.lr_schedule,
        choices=SCHEDULES,
        help="after the warm-up: cosine decay to 0 (default), step (x0.1 at 50%% and 75%%), or "
        "constant",
    )
    t.add_argument("--seed", type=int, default=D.seed)
    t.add_argument("--deterministic", action="store_true", help="TF op determinism")
    t.add_argument(
        "--threads",
        type=int,
        default=D.threads,
        help="TF intra- and inter-op threads per rank (0: the cores divided among the ranks on "
        "this machine; TF's default for a single rank)",
    )
    t.add_argument("--eval-limit", type=int, default=None, help="evaluate on this many examples")
    t.add_argument(
        "--eval-every",
        type=int,
        default=None,
        metavar="STEPS",
        help="also evaluate every STEPS steps (time-to-accuracy curves; evaluation time is "
        "kept off the training clock)",
    )
    t.add_argument(
        "--targets",
        type=_accuracies,
        default=D.targets,
        metavar="ACC,ACC,...",
        help="test accuracies whose time to reach the report gives (default 0.88,0.90,0.91)",
    )
    o = p.add_argument_group("output")
    o.add_argument("--out", default=D.out, help="logs, metrics, plot and checkpoint")
    o.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    o.add_argument("--no-progress", action="store_true")
    o.add_argument("--log-every", type=int, default=D.log_every, help="TensorBoard step interval")
    o.add_argument(
        "--step-log",
        action="store_true",
        help="rank 0 writes steps.jsonl in --out: every step's per-worker losses, gradient "
        "norms, loss standard errors and LAW weights (lsg / dis_cnn)",
    )
    f = p.add_argument_group("fault injection (demonstrations and tests)")
    f.add_argument(
        "--inject-fault",
        type=parse_fault,
        action="append",
        default=[],
        metavar="RANK:KIND[:FROM_STEP]",
        help=f"make one rank faulty; KIND in {', '.join(FAULT_KINDS)}",
    )
    f.add_argument(
        "--straggler-seconds",
        type=float,
        default=D.straggler_seconds,
        help="a straggler's busy wait a step; a slow rank's per --batch-size samples",
    )
    e = p.add_argument_group("elastic Horovod (docs/elastic.md)")
    e.add_argument(
        "--elastic",
        action="store_true",
        help="run under `horovodrun --min-np/--max-np --host-discovery-script ...`: when a rank "
        "dies the others roll back to the last commit and go on with fewer ranks; ranks that "
        "come back get the state and join",
    )
    e.add_argument(
        "--commit-every",
        type=int,
        default=D.commit_every,
        metavar="STEPS",
        help="--elastic: commit the training state in memory every STEPS steps (the most a "
        "failure can undo)",
    )
    e.add_argument(
        "--evict-after",
        type=int,
        default=D.evict_after,
        metavar="M",
        help="--elastic with --reduction lsg: a rank that LSG rejects for M consecutive steps "
        "is reported, blacklisted for the host-discovery script and told to exit; the job goes "
        "on without it",
    )
    e.add_argument(
        "--min-ranks",
        type=int,
        default=D.min_ranks,
        metavar="N",
        help="--evict-after: never evict below N ranks (give horovodrun's --min-np): the rank "
        "is reported and stays, its gradients still rejected",
    )
    return p


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Parses and checks the flags; errors name the flag (argparse exits with status 2)."""
    p = build_parser()
    ns = p.parse_args(argv)
    cfg = TrainConfig(**vars(ns))
    try:
        return cfg.check()
    except ConfigError as e:
        p.error(str(e))
    raise AssertionError("unreachable")  # p.error exits


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The settings as JSON-ready values (faults as their ``RANK:KIND:FROM_STEP`` text)."""
    d = dataclasses.asdict(cfg)
    d["inject_fault"] = [str(f) for f in cfg.inject_fault]
    d["targets"] = list(cfg.targets)
    return d
