"""Run under horovodrun: checks allreduce (sum, average) and allgather give the right values on
every rank, prints one line per rank for the calling test."""

import numpy as np
import tensorflow as tf

import horovod.tensorflow as hvd

hvd.init()
r, n = hvd.rank(), hvd.size()
s = hvd.allreduce(tf.constant([1.0, 2.0]) * (r + 1), op=hvd.Sum).numpy()
np.testing.assert_allclose(s, np.array([1.0, 2.0]) * n * (n + 1) / 2)
avg = hvd.allreduce(tf.constant(float(r)), op=hvd.Average).numpy()
np.testing.assert_allclose(avg, (n - 1) / 2)
# allgather concatenates along axis 0, also with unequal first dimensions (rank r sends r+1 rows)
g = hvd.allgather(tf.fill([r + 1, 2], float(r))).numpy()
want = np.concatenate([np.full((k + 1, 2), float(k)) for k in range(n)])
np.testing.assert_array_equal(g, want)
print(f"COLLECTIVES_OK rank={r} size={n} sum={s.tolist()} gathered_rows={len(g)}", flush=True)
