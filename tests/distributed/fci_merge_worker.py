"""Horovod worker for test_fci_horovod.py: every rank adapts an FCIFilter on its shard of the
synthetic data (the "map"); adapt merges the class statistics with a Horovod allreduce (the
"reduce"); rank 0 saves the merged state to argv[1]."""

import sys

import numpy as np

import horovod.tensorflow as hvd
from iapdcnn.data import synthetic
from iapdcnn.layers import FCIFilter

hvd.init()
x, y = synthetic(n=300, shape=(20, 20, 1), classes=3, seed=3)
mine = slice(hvd.rank(), None, hvd.size())
f = FCIFilter(block_size=4, epsilon=0.1, mode=sys.argv[2]).adapt((x[mine], y[mine]), batch_size=32)
if hvd.rank() == 0:
    np.savez(
        sys.argv[1],
        counts=f.counts.numpy(),
        sums=f.sums.numpy(),
        mask=f.mask.numpy(),
        position_fci=f.position_fci.numpy(),
        size=hvd.size(),
    )
