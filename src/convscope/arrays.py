"""Checks the engine's functions share: float arrays, matching dtypes and shapes."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ShapeError

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_array(x: Any, name: str) -> np.ndarray:
    """``x`` as a float32 or float64 array; other dtypes are an error, never a silent cast."""
    array = np.asarray(x)
    if array.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"{name} must be float32 or float64, got {array.dtype} {array.shape}")
    return array


def same_dtype(**arrays: np.ndarray | None) -> np.dtype:
    """The one dtype of the named arrays (None entries are skipped)."""
    given = {name: a for name, a in arrays.items() if a is not None}
    dtypes = {a.dtype for a in given.values()}
    if len(dtypes) > 1:
        listing = ", ".join(f"{name} {a.dtype} {a.shape}" for name, a in given.items())
        raise ShapeError(f"dtypes differ: {listing}")
    return dtypes.pop()


def expect_shape(array: np.ndarray, expected: tuple[int, ...], name: str, why: str) -> None:
    """An error naming both shapes when ``array`` does not have ``expected``."""
    if tuple(array.shape) != tuple(expected):
        raise ShapeError(f"{name} has shape {tuple(array.shape)}, expected {tuple(expected)} {why}")


def expect_rank(array: np.ndarray, rank: int, name: str, layout: str) -> None:
    if array.ndim != rank:
        raise ShapeError(f"{name} must be {layout} ({rank} axes), got shape {tuple(array.shape)}")
