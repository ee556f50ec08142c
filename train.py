"""Trains a small Keras CNN on the real Fashion-MNIST with Horovod's DistributedOptimizer and
prints test accuracy. Run as `horovodrun -np 2 -H localhost:2 --gloo python train.py` or as
plain `python train.py`. (The full IA-PDCNNOA trainer replaces this entry point.)"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64, help="per-rank batch size")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate for one rank")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        p.error("--epochs and --batch-size must be >= 1 and --lr > 0")

    import tensorflow as tf

    import horovod.tensorflow.keras as hvd
    from iapdcnn import data, models

    hvd.init()
    tf.keras.utils.set_random_seed(args.seed + hvd.rank())
    train = data.load(
        "fashion_mnist", "train", batch_size=args.batch_size, seed=args.seed, drop_remainder=True
    )
    test = data.load("fashion_mnist", "test", batch_size=256)
    model = models.small_resnet((28, 28, 1), 10, width=16)
    opt = hvd.DistributedOptimizer(tf.keras.optimizers.Adam(args.lr * hvd.size()))
    model.compile(opt, "sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = [
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),
        hvd.callbacks.MetricAverageCallback(),
    ]
    t0 = time.perf_counter()
    model.fit(train, epochs=args.epochs, callbacks=callbacks, verbose=2 if hvd.rank() == 0 else 0)
    elapsed = time.perf_counter() - t0
    _, acc = model.evaluate(test, verbose=0)  # test shard of this rank
    acc = float(hvd.allreduce(tf.constant(acc), op=hvd.Average))
    if hvd.rank() == 0:
        n = 60000 // hvd.size() * hvd.size() * args.epochs
        print(
            f"ranks={hvd.size()} epochs={args.epochs} train_images/s={n / elapsed:.0f} "
            f"test_accuracy={acc:.4f}"
        )
    return acc


if __name__ == "__main__":
    main()
