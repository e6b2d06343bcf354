"""Data sets for training: the built-in 8×8 digits, and local MNIST-style IDX files or
CIFAR-10 python batches. Images come back as float32 (N, C, H, W) in [0, 1], labels int64."""

from __future__ import annotations

import gzip
import io
import pickle
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import ConvScopeError


class DataError(ConvScopeError):
    """A data file that is missing or not in the expected format."""


@dataclass
class Dataset:
    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    scale: float = 255.0  # raw integer pixels are divided by this

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    @property
    def classes(self) -> int:
        return int(max(self.train_labels.max(), self.test_labels.max())) + 1


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices holding out ``test_fraction`` of every class."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(len(idx) * test_fraction))
        test.append(idx[:cut])
        train.append(idx[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


SPLIT_SEED = 20251127  # the digits split is fixed, whatever the training seed


def load_digits(test_fraction: float = 0.2) -> Dataset:
    """The 1,797 UCI 8×8 digits shipped with convscope, split 80/20 per class."""
    with resources.files("convscope").joinpath("data/digits.npz").open("rb") as f:
        archive = np.load(io.BytesIO(f.read()), allow_pickle=False)
        images = archive["images"].astype(np.float32)[:, None] / 16.0
        labels = archive["labels"].astype(np.int64)
    train, test = stratified_split(labels, test_fraction, SPLIT_SEED)
    return Dataset("digits", images[train], labels[train], images[test], labels[test], 16.0)


def _open(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format), gzipped or not, as a uint8 array."""
    data = _open(path)
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * rank)
    if body.size != int(np.prod(dims)):
        raise DataError(
            f"{path}: header says {dims} ({int(np.prod(dims))} bytes), found {body.size}"
        )
    return body.reshape(dims)


def _find(folder: Path, stems: tuple[str, ...]) -> Path:
    for stem in stems:
        for suffix in ("", ".gz"):
            candidate = folder / f"{stem}{suffix}"
            if candidate.exists():
                return candidate
    raise DataError(f"{folder}: no file named {' or '.join(stems)} (optionally .gz)")


def load_idx_folder(folder: Path) -> Dataset:
    """MNIST or Fashion-MNIST: train-images-idx3-ubyte, train-labels-idx1-ubyte and t10k-*."""

    def images(kind: str) -> np.ndarray:
        stems = (f"{kind}-images-idx3-ubyte", f"{kind}-images.idx3-ubyte")
        return read_idx(_find(folder, stems)).astype(np.float32)[:, None] / 255.0

    def labels(kind: str) -> np.ndarray:
        stems = (f"{kind}-labels-idx1-ubyte", f"{kind}-labels.idx1-ubyte")
        return read_idx(_find(folder, stems)).astype(np.int64)

    data = Dataset(folder.name, images("train"), labels("train"), images("t10k"), labels("t10k"))
    for split, x, y in (("train", data.train_images, data.train_labels),
                        ("t10k", data.test_images, data.test_labels)):  # fmt: skip
        if len(x) != len(y):
            raise DataError(f"{folder}: {split} has {len(x)} images but {len(y)} labels")
    return data


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and NumPy arrays: a data file never runs code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> type:
        if (module, name) not in self.ALLOWED:
            raise DataError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as error:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({error})") from error
    return data.astype(np.float32) / 255.0, labels


def load_cifar_folder(folder: Path) -> Dataset:
    """CIFAR-10 python batches: data_batch_1..5 and test_batch."""
    parts = [_cifar_batch(p) for p in sorted(folder.glob("data_batch_*"))]
    if not parts:
        raise DataError(f"{folder}: no data_batch_* files")
    test = _cifar_batch(_find(folder, ("test_batch",)))
    return Dataset(
        "cifar10",
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        *test,
    )


def load(path: str | None) -> Dataset:
    """The built-in digits (no path), or the data set in a local folder."""
    if path is None:
        return load_digits()
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"--data must be a folder of MNIST IDX files or CIFAR-10 batches: {path}")
    if any(folder.glob("data_batch_*")):
        return load_cifar_folder(folder)
    return load_idx_folder(folder)


def load_images(path: str, scale: float = 255.0) -> np.ndarray:
    """Images to classify: .npy, .npz (key 'images') or an IDX file, as float32 N×C×H×W.

    Integer (raw) pixels are divided by ``scale``, the training data's pixel range; float
    images are taken as already scaled to [0, 1]."""
    file = Path(path)
    if not file.exists():
        raise DataError(f"no such file: {path}")
    if file.suffix in (".npy", ".npz"):
        try:
            loaded = np.load(file, allow_pickle=False)
            array = loaded["images"] if file.suffix == ".npz" else loaded
        except (ValueError, KeyError, OSError) as error:
            raise DataError(f"{path}: cannot read images ({error})") from error
    else:
        array = read_idx(file)
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / scale
    array = array.astype(np.float32)
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4:
        raise DataError(f"{path}: expected images N×H×W or N×C×H×W, got shape {array.shape}")
    return array
