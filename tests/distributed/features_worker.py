"""Run under horovodrun -np 2 by test_features_cache.py: ``features.prepare`` with a cache
(local rank 0 computes and writes, the other rank loads), without one (each rank computes), and with a damaged cache file (every rank raises). argv[1]: the cache folder.
Prints one ``FEATURES {json}`` line per rank and phase."""

import json
import os
import sys

import horovod.tensorflow as hvd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from iapdcnn.training import features as F  # noqa: E402
from test_features_cache import fast, quiet, small_data  # noqa: E402

hvd.init()
rank, cache = hvd.rank(), sys.argv[1]
data, settings = small_data(), fast(fci_drop=0.2)


def report(phase, **kw):
    print("FEATURES " + json.dumps(dict(phase=phase, rank=rank, **kw)), flush=True)


for phase, cache_dir in (("cached", cache), ("plain", None)):
    out, info = F.prepare(data, settings, cache_dir=cache_dir, data_key="hvd", hvd=hvd, log=quiet)
    report(phase, cache=info["cache"], digest=F.digest(out))
if rank == 0:
    path = os.path.join(cache, os.listdir(cache)[0])
    with open(path, "r+b") as fh:
        fh.truncate(100)
hvd.broadcast_object(None, name="damaged_barrier")
try:
    F.prepare(data, settings, cache_dir=cache, data_key="hvd", hvd=hvd, log=quiet)
    report("damaged", error="")
except ValueError as e:
    report("damaged", error=str(e))
