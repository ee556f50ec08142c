"""One tf.distribute worker (under ``iapdcnn.tfrun``) calling the engine's collectives eagerly,
as the trainer does between steps, more often than TensorFlow's retracing warning allows: an
uneven allgather (worker r gives r + 1 rows), a grouped allreduce of two dtypes, Max, Average and
the object collectives. Prints one JSON line of what it got."""

import json

import tensorflow as tf

from iapdcnn.distributed import tf_distribute

comm = tf_distribute.init()
r, out = comm.rank(), []
for i in range(8):
    gathered = comm.allgather(tf.fill([r + 1, 3], float(r + i)))
    summed = comm.grouped_allreduce(
        [tf.ones([2, 2]) * (r + 1), tf.constant(3 + r, tf.int32)], op=comm.Sum
    )
    top = comm.allreduce(tf.constant([float(r), -float(r)]), op=comm.Max)
    mean = comm.allreduce(tf.constant([float(r)], tf.float64))
    objs = comm.allgather_object({"rank": r, "i": i, "pad": "x" * (r * 7)})
    out.append(
        {
            "gathered": gathered.numpy().tolist(),
            "summed": [summed[0].numpy().tolist(), int(summed[1])],
            "dtypes": [summed[0].dtype.name, summed[1].dtype.name],
            "max": top.numpy().tolist(),
            "mean": mean.numpy().tolist(),
            "objs": objs,
            "root": comm.broadcast_object({"from": r} if r == 1 else None, root_rank=1),
        }
    )
print("RESULT " + json.dumps({"rank": r, "calls": out}))
