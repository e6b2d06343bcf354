"""Data sets for training: the built-in 8×8 digits, and local MNIST-style IDX files or
CIFAR-10 python batches. Images come back as float32 (N, C, H, W) in [0, 1], labels int64.

Every reader checks what a file claims (an IDX header's dimensions, an .npy header's shape, a
zip member's size, a pickle's references) against what the file can hold before allocating,
so a small hostile file cannot exhaust memory or time: it gets one ``DataError``."""

from __future__ import annotations

import gzip
import io
import math
import pickle
import pickletools
import zipfile
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import ConvScopeError


class DataError(ConvScopeError):
    """A data file that is missing or not in the expected format."""


# Deflate cannot expand more than 1032:1, so a member or .gz claiming more is lying.
DEFLATE_MAX_RATIO = 1032
MAX_FILE_BYTES = 1 << 32  # what one data file may hold once decompressed
MAX_SIDE = 256  # the largest image side the LeNet-style model is built for
MIN_SIDE = 4  # two 2×2 pools need at least 4×4
MAX_CHANNELS = 16
MAX_CLASSES = 1000
MAX_PICKLE_REFERENCES = 1000  # memo GETs and DUPs; a real CIFAR batch holds a handful


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


def check_image_shape(shape: tuple[int, ...], where: str) -> None:
    """Refuses an image shape (C, H, W) the LeNet-style model cannot take."""
    c, h, w = shape
    if h != w:
        raise DataError(f"{where}: images must be square, got {h}×{w}")
    if not (MIN_SIDE <= h <= MAX_SIDE):
        raise DataError(f"{where}: image sides must be {MIN_SIDE} to {MAX_SIDE}, got {h}")
    if not (1 <= c <= MAX_CHANNELS):
        raise DataError(f"{where}: images must have 1 to {MAX_CHANNELS} channels, got {c}")


def check_dataset(data: Dataset, where: str) -> Dataset:
    """Refuses a data set the trainer cannot use: every rule is checked before training."""
    for split, x, y in (("train", data.train_images, data.train_labels),
                        ("test", data.test_images, data.test_labels)):  # fmt: skip
        if x.ndim != 4:
            raise DataError(f"{where}: {split} images must be N×C×H×W, got shape {x.shape}")
        if len(x) == 0:
            raise DataError(f"{where}: the {split} split holds no images")
        if y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{where}: {split} has {len(x)} images but {y.size} labels")
        if y.min() < 0 or y.max() >= MAX_CLASSES:
            raise DataError(
                f"{where}: {split} labels must be 0 to {MAX_CLASSES - 1}, "
                f"got {y.min()} to {y.max()}"
            )
        if not np.isfinite(x).all():
            raise DataError(f"{where}: {split} images hold NaN or infinite pixels")
    if data.train_images.shape[1:] != data.test_images.shape[1:]:
        raise DataError(
            f"{where}: train images are {data.train_images.shape[1:]}, "
            f"test images {data.test_images.shape[1:]}"
        )
    check_image_shape(data.image_shape, where)
    return data


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


# -- bounded readers ----------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from error


def _read_exactly(stream: IO[bytes], size: int) -> bytearray | None:
    """``size`` bytes from ``stream`` into a writable buffer, or None if it ends first."""
    buf = bytearray(size)
    view, done = memoryview(buf), 0
    while done < size:
        n = stream.readinto(view[done:])  # type: ignore[attr-defined]
        if not n:
            return None
        done += n
    return buf


def read_npy(
    stream: IO[bytes], size: int, where: str, kinds: str, max_bytes: int | None = None
) -> np.ndarray:
    """An .npy array from ``stream`` holding ``size`` bytes in all, never unpickling.

    The header's shape and dtype are checked against ``size`` before the data is allocated;
    only dtypes of the given kinds ('f' float, 'i'/'u' integer, 'U' text) are accepted."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f".npy format version {version} is not supported")
        header = stream.tell()
    except (ValueError, EOFError, OSError, zlib.error, zipfile.BadZipFile) as error:
        raise DataError(f"{where}: not a valid .npy array ({error})") from error
    if dtype.hasobject or dtype.kind not in kinds or dtype.subdtype is not None:
        raise DataError(f"{where}: arrays of dtype {dtype} are not accepted here")
    nbytes = math.prod(shape) * dtype.itemsize  # exact: Python integers
    if math.prod(max(d, 1) for d in shape) > MAX_FILE_BYTES:  # zero beside huge: no array
        raise DataError(f"{where}: the header claims shape {shape}, which no array can have")
    if header + nbytes != size:
        raise DataError(
            f"{where}: the header claims shape {shape} of {dtype} ({nbytes:,} bytes), "
            f"but {max(size - header, 0):,} bytes follow it"
        )
    if max_bytes is not None and nbytes > max_bytes:
        raise DataError(f"{where}: {nbytes:,} bytes, more than the {max_bytes:,} allowed")
    try:
        buf = _read_exactly(stream, nbytes)
    except (EOFError, OSError, zlib.error, zipfile.BadZipFile) as error:
        raise DataError(f"{where}: the array data is damaged ({error})") from error
    if buf is None:
        raise DataError(f"{where}: the array data is truncated")
    return np.frombuffer(buf, dtype).reshape(shape, order="F" if fortran else "C")


def read_zip_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, kinds: str,
    max_bytes: int | None = None,
) -> np.ndarray:  # fmt: skip
    """One .npy member of an .npz archive, its sizes checked before it is inflated."""
    name = f"{where} member {info.filename}"
    if info.compress_type != zipfile.ZIP_STORED and (
        info.file_size > DEFLATE_MAX_RATIO * max(info.compress_size, 1)
    ):
        raise DataError(
            f"{name}: claims {info.file_size:,} bytes from {info.compress_size:,} compressed, "
            f"more than the {DEFLATE_MAX_RATIO}:1 compression allows"
        )
    try:
        with archive.open(info) as stream:
            return read_npy(stream, info.file_size, name, kinds, max_bytes)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, RuntimeError,
            NotImplementedError) as error:  # fmt: skip
        raise DataError(f"{name}: cannot be read ({error})") from error


def open_zip(path: Path) -> zipfile.ZipFile:
    """``path`` as a zip archive (an .npz), or a ``DataError``."""
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError as error:
        raise DataError(f"no such file: {path}") from error
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise DataError(f"{path} is not a readable .npz archive ({error})") from error


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format), gzipped or not, as a uint8 array.

    The dimensions in the header are checked against what the file can hold (exactly, with
    Python integers) before the body is read or decompressed."""
    raw = _read_bytes(path)
    zipped = raw[:2] == b"\x1f\x8b"
    stream: IO[bytes] = gzip.GzipFile(fileobj=io.BytesIO(raw)) if zipped else io.BytesIO(raw)
    try:
        head = stream.read(4)
        if len(head) < 4 or head[:2] != b"\x00\x00" or head[2] != 0x08:
            raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
        rank = head[3]
        packed = stream.read(4 * rank)
        if len(packed) < 4 * rank:
            raise DataError(f"{path}: the IDX header is truncated ({rank} dimensions declared)")
        dims = [int.from_bytes(packed[4 * i : 4 * i + 4], "big") for i in range(rank)]
        expected = math.prod(dims)
        room = min(DEFLATE_MAX_RATIO * len(raw), MAX_FILE_BYTES) if zipped else len(raw)
        if expected > room:
            raise DataError(
                f"{path}: header says {dims} ({expected:,} bytes), more than the file can "
                f"hold ({room:,} bytes)"
            )
        if math.prod(max(d, 1) for d in dims) > MAX_FILE_BYTES:  # zero beside huge: no array
            raise DataError(f"{path}: header says {dims}, dimensions no array can have")
        body = stream.read(expected + 1)  # one more byte tells a too-long body
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: not a valid gzip file ({error})") from error
    if len(body) != expected:
        raise DataError(f"{path}: header says {dims} ({expected:,} bytes), found {len(body):,}")
    return np.frombuffer(body, np.uint8).reshape(dims)


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
        path = _find(folder, (f"{kind}-images-idx3-ubyte", f"{kind}-images.idx3-ubyte"))
        array = read_idx(path)
        if array.ndim != 3:
            raise DataError(f"{path}: images must be N×H×W (3 dimensions), got {array.shape}")
        return array.astype(np.float32)[:, None] / 255.0

    def labels(kind: str) -> np.ndarray:
        path = _find(folder, (f"{kind}-labels-idx1-ubyte", f"{kind}-labels.idx1-ubyte"))
        array = read_idx(path)
        if array.ndim != 1:
            raise DataError(f"{path}: labels must be one dimension, got {array.shape}")
        return array.astype(np.int64)

    data = Dataset(folder.name, images("train"), labels("train"), images("t10k"), labels("t10k"))
    return check_dataset(data, str(folder))


# -- CIFAR-10 -----------------------------------------------------------------------------------


def _reconstruct(subtype: type, shape: tuple, dtype: Any) -> np.ndarray:
    """numpy's ``_reconstruct``, limited to the empty array a pickled ndarray starts from
    (its contents come with BUILD, whose size numpy checks against the shape)."""
    if subtype is not np.ndarray or shape != (0,):
        raise DataError("a pickled array that does not start empty")
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)


def _dtype(name: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype`` limited to plain integer dtypes."""
    if name not in ("u1", "i1", "i2", "i4", "i8", "u2", "u4", "u8"):
        raise DataError(f"a pickled dtype {name!r} (only plain integers are accepted)")
    return np.dtype(name)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and integer NumPy arrays: a data file never runs code,
    and a pickled array never allocates more than its data."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise DataError(f"refusing to load {module}.{name} from a data file")
        return self.ALLOWED[module, name]


def _check_pickle(raw: bytes, path: Path) -> None:
    """Walks the opcodes without running them: refuses a malformed stream, and one whose
    memo references (GET, DUP) could build an object graph far larger than the file."""
    references = 0
    try:
        for op, _, _ in pickletools.genops(raw):
            if op.name in ("GET", "BINGET", "LONG_BINGET", "DUP"):
                references += 1
                if references > MAX_PICKLE_REFERENCES:
                    raise DataError(
                        f"{path}: more than {MAX_PICKLE_REFERENCES} shared references in the "
                        "pickle (a CIFAR-10 batch needs a handful); refusing a memo bomb"
                    )
    except (ValueError, pickle.UnpicklingError) as error:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({error})") from error


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = _read_bytes(path)
    _check_pickle(raw, path)
    try:
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, ValueError, EOFError, TypeError, AttributeError,
            IndexError, KeyError, OverflowError, RecursionError) as error:  # fmt: skip
        raise DataError(f"{path}: not a CIFAR-10 python batch ({error})") from error
    # type checks before any indexing or conversion: never walk an unknown structure
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path}: not a CIFAR-10 python batch (no dict with data and labels)")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:  # fmt: skip
        shape = data.shape if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: data must be a uint8 array N×3072, got {shape}")
    if not isinstance(labels, list) or not all(type(label) is int for label in labels):
        raise DataError(f"{path}: labels must be a list of integers")
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
    if labels and not all(0 <= label < MAX_CLASSES for label in labels):
        raise DataError(f"{path}: labels must be 0 to {MAX_CLASSES - 1}")
    images = data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    return images, np.asarray(labels, dtype=np.int64).reshape(-1)


def load_cifar_folder(folder: Path) -> Dataset:
    """CIFAR-10 python batches: data_batch_1..5 and test_batch."""
    parts = [_cifar_batch(p) for p in sorted(folder.glob("data_batch_*"))]
    if not parts:
        raise DataError(f"{folder}: no data_batch_* files")
    test = _cifar_batch(_find(folder, ("test_batch",)))
    data = Dataset(
        "cifar10",
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        *test,
    )
    return check_dataset(data, str(folder))


def load(path: str | None) -> Dataset:
    """The built-in digits (no path), or the data set in a local folder."""
    if path is None:
        return load_digits()
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"--data must be a folder of MNIST IDX files or CIFAR-10 batches: {path}")
    try:
        if any(folder.glob("data_batch_*")):
            return load_cifar_folder(folder)
        return load_idx_folder(folder)
    except MemoryError as error:
        raise DataError(f"{path}: not enough memory to load this data set") from error


def load_images(path: str, scale: float = 255.0) -> np.ndarray:
    """Images to classify: .npy, .npz (key 'images') or an IDX file, as float32 N×C×H×W.

    Integer (raw) pixels are divided by ``scale``, the training data's pixel range; float
    images are taken as already scaled to [0, 1]. Empty, non-numeric and non-finite images
    are refused."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"no such file: {path}")
    try:
        array = _read_images(file)
    except MemoryError as error:
        raise DataError(f"{path}: not enough memory to load these images") from error
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4:
        raise DataError(f"{path}: expected images N×H×W or N×C×H×W, got shape {array.shape}")
    if array.size == 0:
        raise DataError(f"{path}: holds no images (shape {array.shape})")
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float32) / np.float32(scale)
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: refused next
        images = array.astype(np.float32)
    if not np.isfinite(images).all():
        raise DataError(f"{path}: images hold NaN or infinite pixels (or beyond float32)")
    return images


def _read_images(file: Path) -> np.ndarray:
    """The raw array in an .npy, an .npz (key 'images') or an IDX file."""
    kinds = "uif"
    if file.suffix == ".npy":
        try:
            with file.open("rb") as stream:
                return read_npy(stream, file.stat().st_size, str(file), kinds)
        except OSError as error:
            raise DataError(f"{file}: cannot read ({error.strerror or error})") from error
    if file.suffix == ".npz":
        with open_zip(file) as archive:
            try:
                info = archive.getinfo("images.npy")
            except KeyError as error:
                raise DataError(f"{file}: no array named 'images' in the archive") from error
            return read_zip_member(archive, info, str(file), kinds)
    return read_idx(file)
