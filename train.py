"""The program users launch: `horovodrun -np N -H localhost:N --gloo python train.py ...` or plain
`python train.py ...`. The trainer itself is the package iapdcnn.training; run
`python train.py --help` for the flags."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import iapdcnn  # noqa: E402

iapdcnn.use_tf_keras()  # the trainer and Horovod's Keras API are tf_keras (Keras 2)

from iapdcnn.training import main  # noqa: E402

if __name__ == "__main__":
    main()
