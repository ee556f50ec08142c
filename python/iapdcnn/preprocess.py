"""The MHO-PFES preprocessing job (spec §1): EdgeFeatures (NLM + Marr-Hildreth) and FCIFilter
adapt/apply over a dataset, one shard of the data per process (Horovod rank), written as sharded
TFRecords with a JSON report. Resumable: finished shards are skipped, shards appear atomically.
The output folder holds one configuration's output: a rerun with other settings is refused
(``PreprocessError`` names the folder and the settings that differ), never half-applied.

    iapdcnn preprocess --dataset fashion_mnist --out runs/pfes
    horovodrun -np 2 python -m iapdcnn.preprocess --dataset fashion_mnist --out runs/pfes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import data, world
from ._io import atomic_bytes, atomic_json, atomic_write, remove_stale_temporaries
from .data import synthetic, write_tfrecords

STATE_FILE = "fci_state.npz"
REPORT_FILE = "report.json"
SIDECAR = ".json"  # next to each shard: its counts and the configuration key that made it
# The settings that decide what the folder holds; a rerun must repeat them (ranks too).
CONFIG_KEYS = (
    "dataset",
    "split",
    "path",
    "limit",
    "shard_size",
    "patch_radius",
    "search_radius",
    "h",
    "laplacian",
    "threshold",
    "absolute",
    "edge_mode",
    "block_size",
    "epsilon",
    "fci_mode",
    "min_keep",
)


class PreprocessError(ValueError):
    """The job cannot resume in ``--out``; the message names the folder or file."""


# what ends the job with its message alone (``iapdcnn preprocess`` and ``main``): the folder's
# refusal, and the loaders' errors, which name the dataset, file or argument
ERRORS = (PreprocessError, data.DataError)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The job's command-line arguments (shared by ``iapdcnn preprocess`` and ``-m``)."""
    from ._defaults import (
        COSINE_NLM,
        FCI_FILTER,
        MARR_HILDRETH,
        MARR_HILDRETH_LAPLACIANS,
        MARR_HILDRETH_MODES,
    )
    from .layers.fci_filter import MODES as FCI_MODES

    p.add_argument("--dataset", default="fashion_mnist", help="iapdcnn.data name, or 'synthetic'")
    p.add_argument("--split", default="train")
    p.add_argument("--path", default=None, help="dataset location (cifar*, image_folder, tfrecord)")
    p.add_argument("--out", required=True, help="output folder (shards, state, report.json)")
    p.add_argument("--limit", type=int, default=None, help="at most this many images per rank")
    p.add_argument("--shard-size", type=int, default=2048, help="images per output shard")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--patch-radius", type=int, default=COSINE_NLM["patch_radius"])
    p.add_argument("--search-radius", type=int, default=COSINE_NLM["search_radius"])
    p.add_argument("--h", type=float, default=COSINE_NLM["h"])
    p.add_argument(
        "--laplacian",
        type=int,
        default=MARR_HILDRETH["laplacian"],
        choices=MARR_HILDRETH_LAPLACIANS,
    )
    p.add_argument("--threshold", type=float, default=MARR_HILDRETH["threshold"])
    p.add_argument("--absolute", action="store_true", help="threshold is absolute, not relative")
    p.add_argument("--edge-mode", default=MARR_HILDRETH["mode"], choices=MARR_HILDRETH_MODES)
    p.add_argument("--block-size", type=int, default=FCI_FILTER["block_size"])
    p.add_argument("--epsilon", type=float, default=0.1)
    p.add_argument("--fci-mode", default=FCI_MODES[0], choices=FCI_MODES)
    p.add_argument("--min-keep", type=float, default=0.0, help="drop images keeping less")
    p.add_argument("--preview", default=None, help="write a PNG: original/denoised/edges/kept")
    p.add_argument("--preview-count", type=int, default=4)
    p.add_argument("--no-progress", action="store_true")


def load_data(args: argparse.Namespace, rank: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """This rank's shard of the dataset as NumPy arrays, through ``iapdcnn.data.load``."""
    if args.dataset == "synthetic":
        x, y = synthetic()
        x, y = x[rank::size], y[rank::size]
    else:
        x, y = data.load(
            args.dataset,
            args.split,
            shuffle=False,
            shard=(rank, size),
            path=args.path,
            as_numpy=True,
        )
    if args.limit is not None:
        x, y = x[: args.limit], y[: args.limit]
    return np.asarray(x, np.float32), np.asarray(y, np.int64)


def _config(args: argparse.Namespace, size: int) -> dict[str, Any]:
    return {k: getattr(args, k) for k in CONFIG_KEYS} | {"ranks": size}


def _config_key(config: dict[str, Any]) -> str:
    blob = json.dumps(config, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _differences(theirs: Any, ours: dict[str, Any]) -> str:
    """``--flag: folder X, this run Y`` for every setting that differs."""
    if not isinstance(theirs, dict):
        return "its files record no configuration (an older iapdcnn wrote them)"
    diff = [
        f"{'--' + k.replace('_', '-') if k != 'ranks' else 'ranks'}: folder {theirs.get(k)!r}, "
        f"this run {v!r}"
        for k, v in ours.items()
        if theirs.get(k) != v
    ]
    return "; ".join(diff) or "its configuration key differs"


def check_folder(out: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """Checks that ``out`` holds nothing but this configuration's output; returns the saved FCI
    state (None if there is none yet). Every rank reads the same files, so all decide alike.

    Raises:
      PreprocessError: naming ``out`` and each setting that differs, or a damaged file.
    """
    key = _config_key(config)
    advice = "use another --out, or empty the folder to recompute"

    def refuse(what: str, theirs: Any) -> PreprocessError:
        return PreprocessError(
            f"--out {out}: {what} was written with another configuration "
            f"({_differences(theirs, config)}); {advice}"
        )

    state = None
    state_path = os.path.join(out, STATE_FILE)
    if os.path.exists(state_path):
        try:
            with np.load(state_path, allow_pickle=False) as z:
                state = {k: z[k] for k in z.files}
            saved_key = str(state["key"])
            saved = json.loads(str(state["config"])) if "config" in state else None
        except Exception as e:
            raise PreprocessError(
                f"--out {out}: {state_path} is damaged ({type(e).__name__}: {e}); {advice}"
            ) from None
        if saved_key != key:
            raise refuse(STATE_FILE, saved)
    for name in sorted(os.listdir(out)):
        if not name.endswith(".tfrecord" + SIDECAR):
            continue
        path = os.path.join(out, name)
        try:
            with open(path) as f:
                meta = json.load(f)
        except (OSError, ValueError) as e:
            raise PreprocessError(
                f"--out {out}: {path} is damaged ({type(e).__name__}: {e}); {advice}"
            ) from None
        if not isinstance(meta, dict) or meta.get("config_key") != key:
            raise refuse(name, meta.get("config") if isinstance(meta, dict) else None)
    return state


def _write_shard(path: str, images: np.ndarray, labels: np.ndarray, meta: dict) -> None:
    """Writes the shard atomically (``iapdcnn.data.write_tfrecords``: temporary name, fsync,
    rename), its sidecar JSON first: a killed run never leaves a shard that looks complete."""
    atomic_json(path + SIDECAR, meta, indent=None)
    write_tfrecords(path, images, labels)


def _edges(layer: Any, x: np.ndarray, batch: int, bar: Any) -> tuple[np.ndarray, np.ndarray]:
    """(denoised, edges) of x, in batches."""
    den, edg = [], []
    for i in range(0, len(x), batch):
        d = layer.denoise(x[i : i + batch]).numpy()
        den.append(d)
        edg.append(_edge_only(layer, d))
        bar.update(len(d))
    if not den:
        shape = (0,) + x.shape[1:]
        return np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    return np.concatenate(den), np.concatenate(edg)


def _edge_only(layer: Any, d: np.ndarray) -> np.ndarray:
    from . import ops

    return ops.marr_hildreth(
        d, layer.laplacian, layer.threshold, layer.relative, layer.mode
    ).numpy()


def render_preview(path: str, x, den, edg, kept, labels) -> None:
    """original / denoised / edges / kept blocks for a few images, one row each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(x)
    fig, axes = plt.subplots(max(n, 1), 4, figsize=(8, 2 * max(n, 1)), squeeze=False)
    titles = ["original", "denoised (NLM)", "edges (Marr-Hildreth)", "kept blocks (FCI)"]
    for i in range(n):
        for j, im in enumerate((x[i], den[i], edg[i], kept[i])):
            ax = axes[i][j]
            ax.imshow(im[..., 0] if im.shape[-1] == 1 else np.clip(im, 0, 1), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=8)
        axes[i][0].set_ylabel(f"label {int(labels[i])}", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    plt.close(fig)


def run(args: argparse.Namespace) -> dict:
    """Runs the job on this process's rank; returns the report (rank 0 also writes it)."""
    t0 = time.perf_counter()
    world.init_if_launched()  # Horovod when launched by horovodrun, else a single process
    rank, size = world.rank_size(from_environment=False)
    from tqdm import tqdm

    from .layers import EdgeFeatures, FCIFilter

    os.makedirs(args.out, exist_ok=True)
    config = _config(args, size)
    key = _config_key(config)
    state = check_folder(args.out, config)
    # What this rank's killed predecessors left half-written (only its own shards' names; rank 0
    # also the state and report): never read, but they would pile up.
    prefix = f"{args.split}-r{rank:03d}-"
    own = (STATE_FILE, REPORT_FILE) if rank == 0 else ()
    remove_stale_temporaries(args.out, lambda name: name.startswith(prefix) or name in own)
    x, y = load_data(args, rank, size)
    edges = EdgeFeatures(
        args.patch_radius,
        args.search_radius,
        args.h,
        args.laplacian,
        args.threshold,
        args.edge_mode,
        relative=not args.absolute,
    )
    fci = FCIFilter(args.block_size, args.epsilon, args.fci_mode, args.min_keep)
    n_shards = (len(x) + args.shard_size - 1) // args.shard_size
    names = [
        os.path.join(args.out, f"{args.split}-r{rank:03d}-{i:05d}-of-{n_shards:05d}.tfrecord")
        for i in range(n_shards)
    ]
    # a shard is done when it and its sidecar are there (check_folder vouched for their key)
    todo = [
        i for i, nm in enumerate(names) if not (os.path.exists(nm) and os.path.exists(nm + SIDECAR))
    ]
    state_path = os.path.join(args.out, STATE_FILE)
    quiet = args.no_progress or rank != 0
    # Every rank takes part in adapt's allreduce, so all decide the same way (state or no state).
    if state is None:
        bar = tqdm(total=len(x), desc=f"edges r{rank}", disable=quiet, unit="img")
        den, edg = _edges(edges, x, args.batch_size, bar)
        bar.close()
        fci.adapt((edg, y), batch_size=args.batch_size)
        if rank == 0:
            buf = _npz_bytes(
                key=key,
                config=json.dumps(config, sort_keys=True),
                counts=fci.counts.numpy(),
                sums=fci.sums.numpy(),
                mask=fci.mask.numpy(),
                position_fci=fci.position_fci.numpy(),
            )
            atomic_bytes(state_path, buf)
    else:
        fci.num_classes = int(len(state["counts"]))
        fci.build((None,) + x.shape[1:])
        for k in ("counts", "sums", "mask", "position_fci"):
            getattr(fci, k).assign(state[k])
        den = edg = None
    bar = tqdm(total=len(todo), desc=f"shards r{rank}", disable=quiet, unit="shard")
    for i in todo:
        sl = slice(i * args.shard_size, (i + 1) * args.shard_size)
        if edg is None:
            e = _edges(edges, x[sl], args.batch_size, tqdm(disable=True))[1]
        else:
            e = edg[sl]
        out, keep, frac = (t.numpy() for t in fci.screen(e, y[sl]))
        ok = frac >= args.min_keep
        k = fci.num_classes
        meta = {
            "config_key": key,
            "config": config,
            "images_in": int(len(e)),
            "images_out": int(ok.sum()),
            "blocks_kept_per_class": np.bincount(y[sl], keep.sum(1), k).astype(int).tolist(),
            "blocks_per_class": (np.bincount(y[sl], None, k) * keep.shape[1]).astype(int).tolist(),
        }
        _write_shard(names[i], out[ok], y[sl][ok], meta)
        bar.update(1)
    bar.close()
    # Totals from every shard's sidecar (resumed ones included), summed across ranks.
    k = fci.num_classes
    tot = np.zeros(5 + 2 * k, np.float64)
    for nm in names:
        with open(nm + SIDECAR) as f:
            m = json.load(f)
        tot += np.concatenate(
            [
                [m["images_in"], m["images_out"], 0, 0, 0],
                m["blocks_kept_per_class"],
                m["blocks_per_class"],
            ]
        )
    tot[2] = sum(min(args.shard_size, len(x) - i * args.shard_size) for i in todo)
    tot[3] = len(todo)
    tot[4] = n_shards
    tot = world.allreduce_numpy(tot, "sum")
    elapsed = time.perf_counter() - t0
    elapsed = float(world.allreduce_numpy(np.array([elapsed]), "max")[0])
    kept, blocks = tot[5 : 5 + k], tot[5 + k :]
    report = {
        "dataset": args.dataset,
        "split": args.split,
        "ranks": size,
        "images_in": int(tot[0]),
        "images_out": int(tot[1]),
        "shards": int(tot[4]),
        "shards_written_this_run": int(tot[3]),
        "images_processed_this_run": int(tot[2]),
        "blocks_kept_per_class": {str(c): int(kept[c]) for c in range(k)},
        "blocks_per_class": {str(c): int(blocks[c]) for c in range(k)},
        "kept_positions": int(fci.mask.numpy().sum()),
        "positions": int(fci.positions),
        "time_s": round(elapsed, 3),
        # throughput of this run: images it processed (resumed shards excluded) per second
        "images_per_s": round(tot[2] / elapsed, 2) if elapsed > 0 else None,
        "config": {k2: v for k2, v in vars(args).items() if k2 not in ("func",)},
    }
    if rank == 0:
        atomic_json(os.path.join(args.out, REPORT_FILE), report, indent=2)
        if args.preview:
            n = min(args.preview_count, len(x))
            xs = x[:n]
            d = edges.denoise(xs).numpy() if den is None else den[:n]
            e = _edge_only(edges, d) if edg is None else edg[:n]
            kept_im = fci.screen(e, y[:n])[0].numpy()
            render_preview(args.preview, xs, d, e, kept_im, y[:n])
    return report


def _npz_bytes(**arrays: Any) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="iapdcnn preprocess", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    try:
        report = run(p.parse_args(argv))
    except ERRORS as e:
        raise SystemExit(f"iapdcnn preprocess: {e}") from None
    if report is not None:
        print(
            json.dumps(
                {k: report[k] for k in ("images_in", "images_out", "time_s", "images_per_s")}
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
