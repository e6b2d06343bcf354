"""The windows of a pool along each axis, on the real input, and what their structure says:
the rank of an average pool's map, the fewest inputs that meet every window, and the most
windows that can pick different inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..geometry import AdaptiveWindows, Shape, Windows
from ..ops.adaptive_pooling import AdaptivePoolSpec
from ..ops.pooling import PoolSpec


@dataclass(frozen=True)
class AxisWindows:
    """The windows of one axis: window o reads positions ``lo[o], lo[o] + step, …, hi[o]``."""

    size: int
    lo: np.ndarray
    hi: np.ndarray
    step: int

    @property
    def counts(self) -> np.ndarray:
        """Valid inputs per window."""
        return (self.hi - self.lo) // self.step + 1

    def runs(self) -> list[tuple[int, int, int]]:
        """(residue mod step, first, last) lattice indices of each non-empty window's positions
        (with dilation a window may lie wholly in the padding; PyTorch then outputs −inf)."""
        keep = self.hi >= self.lo
        residue = self.lo[keep] % self.step
        first = (self.lo[keep] - residue) // self.step
        last = (self.hi[keep] - residue) // self.step
        return list(zip(residue.tolist(), first.tolist(), last.tolist()))

    def reached(self) -> np.ndarray:
        """Which positions lie in at least one window."""
        mask = np.zeros(self.size, dtype=bool)
        for residue, first, last in set(self.runs()):
            mask[residue + first * self.step : residue + last * self.step + 1 : self.step] = True
        return mask


def axis_windows(spec: PoolSpec | AdaptivePoolSpec, shape: Shape) -> list[AxisWindows]:
    """Each spatial axis's windows on the real input (padding positions are not inputs), as
    ``convscope.geometry`` defines them."""
    out = spec.output_shape(shape)
    if isinstance(spec, AdaptivePoolSpec):
        windows = [AdaptiveWindows(size, o) for size, o in zip(shape[1:], out[1:])]
        return [AxisWindows(w.size, w.starts(), w.ends() - 1, 1) for w in windows]
    axes = []
    for size, o, k, s, p, d in zip(
        shape[1:], out[1:], spec.kernel_size, spec.stride, spec.padding, spec.dilation
    ):
        first, last = Windows(size, -p, k, s, d, o).valid_range()
        axes.append(AxisWindows(size, first, last, d))
    return axes


def interval_rank(lo: Sequence[int], hi: Sequence[int], size: int) -> tuple[int, np.ndarray | None]:
    """Rank of the 0/1 matrix whose rows are the intervals ``[lo_i, hi_i]`` of ``0 … size − 1``,
    and an integer vector of its null space (None when the rank is ``size``).

    With ``P_j`` the indicator of positions ``< j`` (``P_0 = 0``; ``P_1 … P_size`` independent),
    row ``[a, b]`` is ``P_(b+1) − P_a``: an edge between boundaries a and b + 1 of a graph on
    ``0 … size``. So rank = size + 1 − (connected groups of boundaries). ``v`` is in the null
    space iff its prefix sums ``S_j`` agree across every edge: S = 1 on one group without
    boundary 0, 0 elsewhere, gives ``v_i = S_(i+1) − S_i``.
    """
    parent = list(range(size + 1))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in zip(lo, hi):
        ra, rb = root(int(a)), root(int(b) + 1)
        parent[max(ra, rb)] = min(ra, rb)  # a group's root is its smallest boundary
    roots = [root(j) for j in range(size + 1)]
    rank = size + 1 - len(set(roots))
    if rank == size:
        return rank, None
    group = next(r for r in roots if r != 0)
    s = np.array([r == group for r in roots], dtype=np.int64)
    return rank, s[1:] - s[:-1]


def hitting_set(axis: AxisWindows) -> list[int]:
    """Fewest positions that lie in every window: per residue, greedy by right end."""
    picks, last = [], {}
    for residue, first, end in sorted(axis.runs(), key=lambda r: (r[0], r[2])):
        if last.get(residue, first - 1) < first:
            picks.append(residue + end * axis.step)
            last[residue] = end
    return sorted(picks)


def distinct_winners(axis: AxisWindows) -> int:
    """Most windows that can have different arg-maxes: a largest matching of windows to
    positions inside them (per residue, by right end, each takes its leftmost free position,
    which is optimal for intervals)."""
    taken: dict[tuple[int, int], int] = {}  # a taken index points to a later candidate

    def free(residue: int, i: int) -> int:
        path = []
        while (residue, i) in taken:
            path.append(i)
            i = taken[(residue, i)]
        for j in path:
            taken[(residue, j)] = i
        return i

    count = 0
    for residue, first, end in sorted(axis.runs(), key=lambda r: (r[0], r[2], r[1])):
        i = free(residue, first)
        if i <= end:
            taken[(residue, i)] = i + 1
            count += 1
    return count
