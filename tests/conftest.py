"""Shared pytest set-up: quiet TensorFlow logs, the Keras this run tests, fixed seeds, and
fixtures used across test files.

``IAPDCNN_TEST_KERAS`` picks the Keras that ``tf.keras`` (and so iapdcnn's Keras code) is in this
process: ``tf_keras`` (default; Keras 2, what the trainer and Horovod's Keras API use) or
``keras3`` (TensorFlow 2.21's own default). scripts/test.sh runs the whole suite with tf_keras,
then the Keras-facing files again with keras3. Tests marked ``keras3`` need Keras 3."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
KERAS = os.environ.get("IAPDCNN_TEST_KERAS", "tf_keras")
if KERAS not in ("tf_keras", "keras3"):
    raise ValueError(f"IAPDCNN_TEST_KERAS must be 'tf_keras' or 'keras3', got {KERAS!r}")
# Before anything imports TensorFlow; child processes (horovodrun ranks) inherit it.
os.environ["TF_USE_LEGACY_KERAS"] = "1" if KERAS == "tf_keras" else "0"

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_report_header(config):
    return f"iapdcnn: tf.keras is {KERAS} (IAPDCNN_TEST_KERAS)"


def pytest_collection_modifyitems(config, items):
    if KERAS == "keras3":
        return
    skip = pytest.mark.skip(
        reason="needs Keras 3 as tf.keras: run with IAPDCNN_TEST_KERAS=keras3 "
        "(scripts/test.sh's second pass does)"
    )
    for item in items:
        if "keras3" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
