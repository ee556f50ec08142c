"""The program users launch: `horovodrun -np N -H localhost:N --gloo python train.py ...` or plain
`python train.py ...`. The trainer itself is iapdcnn.train (python/iapdcnn/train.py); run
`python train.py --help` for the flags."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "python")
if os.path.isdir(os.path.join(_HERE, "iapdcnn")):  # run from a checkout: use its package
    sys.path.insert(0, _HERE)

from iapdcnn.train import main  # noqa: E402

if __name__ == "__main__":
    main()
