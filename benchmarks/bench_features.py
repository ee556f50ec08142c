"""Benchmark of the MHO-PFES feature stage (spec §1): EdgeFeatures (cosine NLM r=2, s=5, then
Marr-Hildreth) images/s at 28x28 and 224x224, against what a user would otherwise run in the same
process, interleaved: scikit-image denoise_nl_means(fast_mode=True) + scipy's LoG, and OpenCV
fastNlMeansDenoising at the same windows (5x5 template, 11x11 search). Also FCIFilter adapt
throughput. Checks correctness first; the last stdout line is one JSON object of ratios.

    python benchmarks/bench_features.py            # batches of 256 images (the issue's setting)
    python benchmarks/bench_features.py --quick    # fewer images and repeats, same JSON keys
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import scipy.ndimage as ndi  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench_images import images  # noqa: E402
from iapdcnn import reference  # noqa: E402
from iapdcnn.data import synthetic  # noqa: E402
from iapdcnn.layers import EdgeFeatures, FCIFilter  # noqa: E402

R, S, H = 2, 5, 0.1


def per_image_seconds(fn) -> tuple[float, float]:
    """(wall, CPU) seconds per image of one call; CPU time sums all threads of this process and
    is much less sensitive than wall time to other processes sharing the cores."""
    t, c = time.perf_counter(), time.process_time()
    n = fn()
    return (time.perf_counter() - t) / n, (time.process_time() - c) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer images and repeats")
    p.add_argument("--reps", type=int, default=None)
    args = p.parse_args()
    quick = args.quick
    reps = args.reps or (2 if quick else 5)
    n28, n224 = (256, 16) if quick else (256, 256)
    n_other_28, n_other_224 = (32, 2) if quick else (128, 8)  # the others are timed per image

    import cv2
    from skimage.restoration import denoise_nl_means

    layer = EdgeFeatures(R, S, H, laplacian=4, threshold=0.1, mode="masked")

    # --- correctness first ---------------------------------------------------------------------
    small = images(2, 14, seed=1)
    want = reference.marr_hildreth(reference.cosine_nlm(small, R, S, H), 4, 0.1, True, "masked")
    got = layer(small).numpy()
    # edges are thresholded, so compare where the reference is not within round-off of a decision
    assert np.mean(np.abs(got - want) < 1e-4) > 0.99, "EdgeFeatures disagrees with the reference"

    def ours(x):
        return lambda: (layer(x).numpy(), len(x))[1]

    def skimage_log(x, k):
        def run():
            for im in x[:k, :, :, 0]:
                d = denoise_nl_means(
                    im, patch_size=2 * R + 1, patch_distance=S, h=H, fast_mode=True
                )
                ndi.gaussian_laplace(d, 1.0)
            return k

        return run

    def opencv(x, k):
        u8 = [np.ascontiguousarray(np.round(im[:, :, 0] * 255).astype(np.uint8)) for im in x[:k]]

        def run():
            for im in u8:
                cv2.fastNlMeansDenoising(im, None, 10.0, 2 * R + 1, 2 * S + 1)
            return k

        return run

    results, cpu_results = {}, {}
    for size, n, k in ((28, n28, n_other_28), (224, n224, n_other_224)):
        x = images(n, size)
        layer(x[:2])  # warm-up (op library load, thread pool)
        cands = {"ours": ours(x), "skimage": skimage_log(x, k), "opencv": opencv(x, k)}
        for f in cands.values():
            f()  # warm-up
        t = {name: [] for name in cands}
        cpu = {name: [] for name in cands}
        for _ in range(reps):  # interleaved, so load from other processes hits all alike
            for name, f in cands.items():
                wall_s, cpu_s = per_image_seconds(f)
                t[name].append(wall_s)
                cpu[name].append(cpu_s)
        med = {name: statistics.median(v) for name, v in t.items()}
        results[size] = med
        cpu_results[size] = {name: statistics.median(v) for name, v in cpu.items()}
        print(
            f"{size}x{size}: ours {med['ours'] * 1e3:.3f} ms/img ({1 / med['ours']:.0f} img/s, "
            f"batch {n}), skimage+LoG {med['skimage'] * 1e3:.3f} ms/img, "
            f"OpenCV {med['opencv'] * 1e3:.3f} ms/img (wall); CPU ms/img: "
            + ", ".join(f"{k} {v * 1e3:.3f}" for k, v in cpu_results[size].items())
        )

    # --- FCIFilter adapt throughput (prototype mode: two passes over the data) ---------------
    xs, ys = synthetic(n=2048 if quick else 8192, shape=(28, 28, 1), classes=10, seed=0)
    f = FCIFilter(block_size=4, epsilon=0.1)
    f.adapt((xs[:256], ys[:256]))
    fci_t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        FCIFilter(block_size=4, epsilon=0.1).adapt((xs, ys), batch_size=512)
        fci_t.append(time.perf_counter() - t0)
    blocks = len(xs) * f.positions
    fci_blocks_per_s = blocks / statistics.median(fci_t)
    print(f"FCIFilter.adapt: {fci_blocks_per_s:.0f} blocks/s ({blocks} blocks of 4x4)")

    out = {
        "vs_opencv_224": round(results[224]["opencv"] / results[224]["ours"], 3),
        "vs_skimage_224": round(results[224]["skimage"] / results[224]["ours"], 3),
        "vs_opencv_28": round(results[28]["opencv"] / results[28]["ours"], 3),
        "fci_blocks_per_s": round(fci_blocks_per_s),
        "ours_ms_224": round(results[224]["ours"] * 1e3, 3),
        "opencv_ms_224": round(results[224]["opencv"] * 1e3, 3),
        "skimage_ms_224": round(results[224]["skimage"] * 1e3, 3),
        "cpu_vs_opencv_224": round(cpu_results[224]["opencv"] / cpu_results[224]["ours"], 3),
        "cpu_vs_skimage_224": round(cpu_results[224]["skimage"] / cpu_results[224]["ours"], 3),
        "cpu_vs_opencv_28": round(cpu_results[28]["opencv"] / cpu_results[28]["ours"], 3),
        "ours_cpu_ms_224": round(cpu_results[224]["ours"] * 1e3, 3),
        "quick": quick,
        "threads": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
        # Fairness: the vs_* ratios are wall time, each side with the threads it uses by
        # default: ours the TF intra-op pool ("threads"), OpenCV its own parallel_for_ pool
        # ("threads_opencv"), scikit-image one thread. *_cpu_per_wall_224 is the parallelism each
        # side actually got (CPU s / wall s); the cpu_vs_* ratios compare CPU seconds per image.
        "threads_opencv": cv2.getNumThreads(),
        "threads_skimage": 1,
        **{
            f"{name}_cpu_per_wall_224": round(cpu_results[224][name] / results[224][name], 2)
            for name in ("ours", "opencv", "skimage")
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
