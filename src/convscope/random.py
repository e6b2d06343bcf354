"""The random number generator that initialisation and dropout draw from."""

from __future__ import annotations

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Makes every later initialisation and dropout mask reproducible."""
    global _generator
    _generator = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    """The current global generator."""
    return _generator
